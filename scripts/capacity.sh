#!/usr/bin/env bash
# The capacity series behind BENCHMARKS.md: a small baseline, then increasing
# call counts, each repeated; server on CPU 0, generator on CPU 1.
#   scripts/capacity.sh "1000 750 500" 3 [EXTRA_SERVER_TOML] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
loads=${1:-"250 500 750 1000"}
repeats=${2:-3}
extra=${3:-}
out=${4:-reports/capacity}
mkdir -p "$out"
scripts/load.sh 2 "talk=1,barge-in=1" 60s "$out/baseline" "$extra" > "$out/baseline.txt"
for n in $loads; do
  for r in $(seq "$repeats"); do
    scripts/load.sh "$n" "talk=3,barge-in=1" 20s "$out/n$n-r$r" "$extra" > "$out/n$n-r$r.txt"
  done
done
python3 scripts/summarize.py "$out"
