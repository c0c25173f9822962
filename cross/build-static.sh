#!/usr/bin/env bash
# Builds and checks the static musl binaries without rustup targets or cross's images: Debian's
# rustc-web toolchain builds std from its source (-Z build-std) and zig links (musl libc, crt,
# libunwind) through cargo-zigbuild. Recipe and pitfalls: docs/cross-build.md.
#
# usage: cross/build-static.sh COMMAND [TARGET...]     (as root for setup; from any folder)
#   setup    apt: rustc-web cargo-web rust-web-src qemu-user-static python3-venv file;
#            venv with ziglang and cargo-zigbuild in $EDGE_AGENT_CACHE (default ~/.cache/edge-agent)
#   build    min-size static binaries in target/static/<target>/min-size/edge-agent
#            (EDGE_AGENT_PROFILE=min-size-symbols: unstripped, for packaging/size-table.py)
#   verify   `file` must say statically linked for the right CPU; the size must be within its
#            budget (packaging/size-budget.tsv); runs --version and a first-boot run (empty
#            EDGE_KEY: exit 78 with the guidance) under qemu
#   test     the end-to-end tests (startup, poll over HTTP and TLS, process, tunnel, agent API,
#            volume and host browsers and edge stacks against the real Docker Engine) against each binary
# TARGET defaults to aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf x86_64-unknown-linux-musl.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${EDGE_AGENT_CACHE:-$HOME/.cache/edge-agent}
VENV=$CACHE/venv
OUT=target/static
command=${1:?usage: cross/build-static.sh setup|build|verify|test [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf x86_64-unknown-linux-musl)

binary() { echo "$OUT/$1/min-size/edge-agent"; }
BUDGETS=packaging/size-budget.tsv

# The byte budget of a target's binary, from $BUDGETS.
budget() {
    local found
    found=$(awk -v t="$1" '$1 == t { print $2 }' "$BUDGETS")
    if [ -z "$found" ]; then
        echo "FAIL: $BUDGETS has no budget for $1: add a line \"$1<TAB>bytes\"" >&2
        exit 1
    fi
    echo "$found"
}

# qemu-user for foreign CPUs; nothing for x86_64.
runner() {
    case $1 in
        aarch64-*) echo qemu-aarch64-static ;;
        armv7-*) echo qemu-arm-static ;;
        x86_64-*) echo "" ;;
        *) echo "unknown target $1" >&2; exit 2 ;;
    esac
}

# armv7: Thumb-2 instructions (2 or 4 bytes) instead of ARM ones (4), which every ARMv7-A CPU
# runs, and LLVM's machine outliner, which on ARM only runs by default for M-profile CPUs (it
# does for aarch64 at opt-level z): repeated instruction sequences become one function each.
code_flags() {
    case $1 in
        armv7-*) echo "-C target-feature=+thumb-mode -C llvm-args=-enable-machine-outliner=always" ;;
    esac
}

# What `file` must say about each target's binary.
expected_file() {
    case $1 in
        aarch64-*) echo "ELF 64-bit LSB executable, ARM aarch64" ;;
        armv7-*) echo "ELF 32-bit LSB executable, ARM, EABI5" ;;
        x86_64-*) echo "ELF 64-bit LSB (pie )?executable, x86-64" ;;
    esac
}

setup() {
    export DEBIAN_FRONTEND=noninteractive
    # Only amd64 packages: never add arm64/armhf architectures (their security index breaks apt).
    apt-get update -q
    # Waits for another apt (a parallel job on the same machine) instead of failing.
    apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends \
        rustc-web cargo-web rust-web-src qemu-user-static python3-venv file
    # build-std finds std's source here; it must be the same version as rustc-web.
    test -e /usr/lib/rustlib/src/rust/library/Cargo.lock
    [ -x "$VENV/bin/pip" ] || /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q ziglang==0.17.1 cargo-zigbuild==0.24.0
}

build() {
    # Debian's cargo/rustc 1.96 (matching rust-web-src), not rustup's proxies in ~/.cargo/bin.
    export PATH=$VENV/bin:/usr/bin:/bin:/usr/sbin:/sbin
    export RUSTC_BOOTSTRAP=1                       # -Z build-std with a stable compiler
    export ZIG_GLOBAL_CACHE_DIR=$CACHE/zig          # zig's musl, crt and libunwind per target
    export CARGO_TARGET_DIR=$OUT                    # keeps host builds in target/ untouched
    # std without backtrace symbolization (panic messages stay; the gimli/addr2line/miniz code
    # goes) and with its smaller algorithms.
    STD_FEATURES=${STD_FEATURES-optimize_for_size}
    local profile=${EDGE_AGENT_PROFILE:-min-size}
    cargo --version
    # Panic locations name their file: std's and the crates' as `core/src/option.rs` and
    # `bytes-1.12.2/src/bytes_mut.rs`, not by this machine's absolute paths (16 KB on armv7).
    cargo fetch --locked --quiet
    local remap=" --remap-path-prefix=$(rustc --print sysroot)/lib/rustlib/src/rust/library/=" dir
    for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
        remap+=" --remap-path-prefix=$dir="
    done
    for t in "${targets[@]}"; do
        local start=$SECONDS
        # A build-std target has no self-contained crt1.o/libc.a: zig supplies them. Nothing
        # unwinds with panic = "abort": no unwind tables (44 KB on armv7, docs/size.md).
        env "CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_RUSTFLAGS=-C link-self-contained=no -C force-unwind-tables=no $(code_flags "$t")$remap" \
            cargo-zigbuild build --locked -Z build-std=std,panic_abort -Z "build-std-features=$STD_FEATURES" \
            --profile "$profile" --target "$t" --bin edge-agent
        echo "built $t in $((SECONDS - start)) s"
    done
}

verify() {
    local env_file
    env_file=$(mktemp)
    trap 'rm -f "$env_file"' RETURN
    printf 'EDGE_KEY=\nEDGE_ID=\n' >"$env_file"
    for t in "${targets[@]}"; do
        local bin run kind size limit out status
        bin=$(binary "$t")
        run=$(runner "$t")
        kind=$(file -b "$bin")
        echo "$t: $kind"
        if ! [[ $kind =~ ^$(expected_file "$t") && $kind == *"statically linked"* ]]; then
            echo "FAIL: $bin is not a static $(expected_file "$t")" >&2
            exit 1
        fi
        size=$(stat -c %s "$bin")
        limit=$(budget "$t")
        echo "$t: size $size bytes ($(awk "BEGIN { printf \"%.2f MB, %.2f MiB\", $size / 1e6, $size / 1048576 }")), budget $limit"
        if [ "$size" -gt "$limit" ]; then
            echo "FAIL: $bin is $size bytes, $((size - limit)) over its budget of $limit ($BUDGETS): docs/size.md says how to find what grew (packaging/size-table.py); raising the budget needs a line in the change's closing note saying why" >&2
            exit 1
        fi
        $run "$bin" --version
        status=0
        out=$($run "$bin" --env-file "$env_file" --data "$(dirname "$env_file")/edge-agent-data" 2>&1) || status=$?
        echo "$t: first boot -> exit $status: $out"
        if [ "$status" != 78 ] || [[ $out != *"EDGE_KEY is not set"* ]]; then
            echo "FAIL: expected exit 78 and the EDGE_KEY guidance" >&2
            exit 1
        fi
    done
}

run_tests() {
    for t in "${targets[@]}"; do
        echo "== end-to-end tests: $(runner "$t") $(binary "$t")"
        EDGE_AGENT_TEST_BIN=$PWD/$(binary "$t") EDGE_AGENT_TEST_RUNNER=$(runner "$t") \
            cargo test --locked --test startup --test poll --test process --test tunnel --test api --test browse --test stacks -- --include-ignored
    done
}

case $command in
    setup) setup ;;
    build) build ;;
    verify) verify ;;
    test) run_tests ;;
    *) echo "unknown command $command" >&2; exit 2 ;;
esac
