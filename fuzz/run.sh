#!/usr/bin/env bash
# Runs every fuzz target (or the TARGETs named) for SECONDS each and prints one row per target:
# seconds, executions, executions per second, corpus entries, crashes. Exits non-zero when a
# target crashed, ran out of memory or hung, naming the input that reproduces it.
#
# usage: fuzz/run.sh SECONDS [TARGET...]
#   FUZZ_JOBS=2   targets run two at a time (default 1)
#
# Needs rustup's stable Rust; installs a C++ compiler (Debian's g++: libfuzzer-sys builds
# libFuzzer) and cargo-fuzz when missing. cargo-fuzz passes nightly flags, which
# RUSTC_BOOTSTRAP=1 allows on stable. Builds without a sanitizer (the agent is safe Rust; about
# twice the speed): fuzz/src/lib.rs's allocator enforces the allocation limit, which
# -malloc_limit_mb enforces only under a sanitizer.
#
# Grown corpus: fuzz/corpus/<target> (seeded from the committed fuzz/seeds/<target>).
# Findings: fuzz/artifacts/<target>/; logs: fuzz/logs/<target>.log. Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -O -a --codegen-units 16 -s none <target> <file>
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
jobs=${FUZZ_JOBS:-1}
export RUSTC_BOOTSTRAP=1 CARGO_TERM_COLOR=never
# A panic's backtrace symbolises the debug info, which alone can pass the RSS limit.
export RUST_BACKTRACE=0
limit_mb=64

if ! command -v c++ >/dev/null; then
    if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
    $sudo apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends g++
fi
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz has no --locked: fail here, not later, when Cargo.lock is not up to date.
cargo metadata --locked --format-version 1 >/dev/null
# Optimised, with overflow checks and debug assertions (an overflow is a crash, as in tests);
# 16 codegen units build in half the time for a few per cent fewer executions.
build=(-O --debug-assertions --codegen-units 16 -s none)
cargo fuzz build "${build[@]}"
bin=target/$(rustc -vV | sed -n 's/^host: //p')/release

if (($# == 0)); then
    mapfile -t targets < <(cargo fuzz list)
else
    targets=("$@")
fi

rm -rf logs rows
mkdir -p logs rows corpus artifacts

# One target: its row in rows/<target>, its log in logs/<target>.log.
run_one() {
    local target=$1 seeds=seeds/$1
    mkdir -p "corpus/$target" "artifacts/$target"
    [[ -d $seeds ]] || seeds=
    local stamp=rows/$target.start start=$SECONDS status=0
    touch "$stamp"
    "$bin/$target" -max_total_time="$seconds" -rss_limit_mb=$limit_mb -malloc_limit_mb=$limit_mb \
        -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$target/" \
        "corpus/$target" ${seeds:+"$seeds"} >"logs/$target.log" 2>&1 || status=$?
    local took=$((SECONDS - start))
    local execs
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$target.log" | tail -1)
    execs=${execs:-0}
    local found crashes
    found=$(find "artifacts/$target" -type f -newer "$stamp" | sort)
    crashes=$(grep -c . <<<"$found" || true)
    if ((status != 0 && crashes == 0)); then
        # Died without leaving an input (killed, or the harness failed to start).
        crashes=1
        found="(no input saved; see fuzz/logs/$target.log)"
    fi
    printf '%s %s %s %s %s %s\n' "$target" "$took" "$execs" "$((execs / (took > 0 ? took : 1)))" \
        "$(find "corpus/$target" -type f | wc -l)" "$crashes" >"rows/$target"
    if ((crashes > 0)); then
        printf '%s\n' "$found" >"rows/$target.found"
    fi
}

for target in "${targets[@]}"; do
    while (($(jobs -rp | wc -l) >= jobs)); do
        wait -n || true
    done
    run_one "$target" &
done
wait

failed=0
printf '%-24s %8s %12s %9s %8s %8s\n' target seconds execs execs/s corpus crashes
for target in "${targets[@]}"; do
    read -r name took execs rate corpus crashes <"rows/$target"
    printf '%-24s %8s %12s %9s %8s %8s\n' "$name" "$took" "$execs" "$rate" "$corpus" "$crashes"
    if ((crashes > 0)); then
        failed=1
    fi
done
for target in "${targets[@]}"; do
    if [[ -f rows/$target.found ]]; then
        echo "$target crashed; replay: RUSTC_BOOTSTRAP=1 cargo fuzz run ${build[*]} $target <file>"
        sed "s|^artifacts/|  fuzz/artifacts/|" "rows/$target.found"
        grep -m3 -E "panicked at|ERROR: libFuzzer|allocation above" "logs/$target.log" |
            sed 's/^/  /' || true
    fi
done
exit $failed
