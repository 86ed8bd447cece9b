#!/usr/bin/env bash
# Run every fuzz target (or those named) under libFuzzer for FUZZ_SECONDS each
# (FUZZ_SECONDS, default 600), JOBS at a time (default 1), then minimise each corpus back
# into fuzz/corpus/<target>. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). A crash leaves its input in
# fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/ once fixed,
# so tests/fuzz_corpus.rs replays it on stable in CI forever after.
# Each run's last libFuzzer status line (executions, coverage) goes to
# benchmarks/fuzz/<target>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-600}"
JOBS="${JOBS:-1}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
fi
mkdir -p benchmarks/fuzz
(cd fuzz && cargo +nightly fuzz build -O)
run() {
  local t="$1" log="/tmp/fuzz-$1.log"
  (cd fuzz && cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1) >"$log" 2>&1
  local rc=$?
  { echo "# $t: $(date -u +%FT%TZ), ${SECONDS_EACH}s, rc=$rc"; grep -E '^#[0-9]+.*(DONE|pulse)|stat::' "$log" | tail -8; } \
    > "benchmarks/fuzz/$t.txt"
  (cd fuzz && cargo +nightly fuzz cmin -O "$t" "corpus/$t" >/dev/null 2>&1) || true
  return $rc
}
export -f run
export SECONDS_EACH
printf '%s\n' "${targets[@]}" | xargs -P "$JOBS" -I{} bash -c 'run {}' || { echo "a target failed: see /tmp/fuzz-*.log"; exit 1; }
cat benchmarks/fuzz/*.txt
