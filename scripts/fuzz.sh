#!/usr/bin/env bash
# Fuzz fhirstream's request parsers with cargo-fuzz (libFuzzer); see
# fuzz/src/lib.rs for what each target checks. `make fuzz` runs it.
#
#   SECONDS_PER_TARGET  how long each target runs (default 20; `make fuzz`
#                       passes FUZZ_SECONDS, whose long form is 600)
#   FUZZ_TARGETS        which targets (default: all of fuzz/Cargo.toml)
#
# cargo-fuzz needs nightly flags; on a stable toolchain RUSTC_BOOTSTRAP=1
# unlocks them. It is installed into ~/.cargo/bin if missing (a one-time
# compile). Targets are built without a sanitizer: the fuzzed crates forbid
# unsafe code, so what fuzzing finds is panics, and AddressSanitizer would
# double build and run time. Inputs grow the corpus in fuzz/corpus/ (git-
# ignored, seeded from fuzz/seeds/); a crash is left in fuzz/artifacts/ and
# the script exits 1. Keep such an input in fuzz/regressions/{target}/, fix
# the crash, and tests/fuzz_regressions.rs replays it in `make test`.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$FHIRSTREAM_ROOT/fuzz"

seconds="${SECONDS_PER_TARGET:-20}"
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (one time)"
    cargo install cargo-fuzz --locked
fi

# Inside the shared target dir when one is set, never a second full one.
target_dir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
target_dir="${target_dir:-$FHIRSTREAM_ROOT/fuzz/target}"
build=(--sanitizer none --target-dir "$target_dir")

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
started=$(date +%s)
log "building fuzz targets: $(echo "$targets" | tr '\n' ' ')"
cargo fuzz build "${build[@]}"
log "built in $(( $(date +%s) - started )) s"

failed=0
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log "fuzzing $t for ${seconds}s"
    out="artifacts/$t/last-run.log"
    if ! cargo fuzz run "${build[@]}" "$t" "corpus/$t" "seeds/$t" "regressions/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$out" 2>&1; then
        log "$t: CRASH, see fuzz/$out and fuzz/artifacts/$t/"
        failed=1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$' | paste -sd+ | bc 2>/dev/null || true)
    cov=$(grep -o 'cov: [0-9]*' "$out" | tail -1 || true)
    log "$t: ${runs:-?} executions, ${cov:-cov: ?}, corpus $(find "corpus/$t" -type f | wc -l) inputs"
done
exit "$failed"
