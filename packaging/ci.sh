#!/usr/bin/env bash
# CI for what goes on the device (called by .ci/run after the tests; runs as root): every locked
# package against Cargo.toml's rust-version (the Rust of the Yocto and Buildroot releases that
# build the recipe; .ci/run's clippy holds the code to it), the Yocto crate list and oelint-adv
# for each declared series, systemd-analyze verify of the units, then the static musl binaries
# (cross/build-static.sh): built, checked with `file`, held to their byte budgets
# (packaging/size-budget.tsv, docs/size.md), and put through the end-to-end tests against the
# fake Portainer server (the ARM ones under qemu-user); the x86_64 one's idle memory is held to
# benches/footprint-budget.tsv.
#
# usage: packaging/ci.sh        (needs the host build of `cargo test` in target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${EDGE_AGENT_CACHE:-$HOME/.cache/edge-agent}

echo "== rust-version: every package of Cargo.lock"
python3 packaging/check-rust-version.py

echo "== Yocto: edge-agent-crates.inc against Cargo.lock"
python3 yocto-layer/scripts/update-crates.py --check

echo "== Yocto: oelint-adv"
[ -x "$CACHE/oelint/bin/oelint-adv" ] || python3 -m venv "$CACHE/oelint"
"$CACHE/oelint/bin/pip" install -q oelint-adv==9.11.2 oelint-parser==8.13.2 oelint-data==1.5.26
releases=$(sed -n 's/^LAYERSERIES_COMPAT_edge-agent = "\(.*\)"$/\1/p' yocto-layer/conf/layer.conf)
if [ -z "$releases" ]; then
    echo "yocto-layer/conf/layer.conf: no LAYERSERIES_COMPAT_edge-agent = \"...\" line" >&2
    exit 1
fi
for release in $releases; do
    # homepageping would fetch HOMEPAGE: no network here. Any finding fails (rc 1).
    (cd yocto-layer && "$CACHE/oelint/bin/oelint-adv" --quiet --relpaths --mode all \
        --release "$release" --suppress oelint.vars.homepageping \
        recipes-containers/edge-agent/edge-agent_*.bb)
    echo "oelint-adv --release $release: no findings"
done

echo "== systemd-analyze verify"
command -v systemd-analyze >/dev/null || apt-get install -y -q --no-install-recommends systemd
units=$(mktemp -d)
trap 'rm -rf "$units"' EXIT
# verify checks that ExecStart's program exists: point it at the host build.
sed "s|^ExecStart=/usr/bin/edge-agent |ExecStart=$PWD/target/debug/edge-agent |" \
    packaging/edge-agent.service >"$units/edge-agent.service"
cp packaging/edge-agent.path "$units/"
systemd-analyze --version | head -n 1
# It exits 0 on unknown keys or bad values, only printing them: any output is a failure.
findings=$(cd "$units" && systemd-analyze verify --man=no --generators=no \
    ./edge-agent.service ./edge-agent.path 2>&1)
if [ -n "$findings" ]; then
    echo "$findings" >&2
    exit 1
fi
echo "systemd-analyze verify edge-agent.service edge-agent.path: no findings"

echo "== static musl binaries"
cross/build-static.sh setup
cross/build-static.sh build
cross/build-static.sh verify
cross/build-static.sh test

echo "== idle memory of the static x86_64 binary against benches/footprint-budget.tsv"
# 300 polls (about 5 s per transport): RSS and anonymous memory settle within the first polls and
# then stay put (docs/footprint.md: the same figures at 10%, 50% and 100% of 10,000 polls, and
# within 8 KiB of them after 300). Built in the test profile: the bench is only the harness,
# the binary measured is the static one. Fails over budget.
EDGE_AGENT_TEST_BIN=$PWD/target/static/x86_64-unknown-linux-musl/min-size/edge-agent \
    FOOTPRINT_POLLS=300 cargo test --locked --bench footprint
