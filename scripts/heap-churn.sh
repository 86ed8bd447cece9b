#!/usr/bin/env bash
# What the server's heap holds after N short calls (250 at a time): a release callbridge
# under heaptrack (Debian's `heaptrack`), the loadtest's churn of short calls, then kill -9,
# so everything still allocated shows as "leaked"; writes a collapsed-stack file of those
# bytes to OUT. Run it for two N and diff with scripts/heap-diff.py: what grows per call.
#   scripts/heap-churn.sh N OUT        e.g. scripts/heap-churn.sh 1000 /tmp/h1000.fg
# Build both first: cargo build --release -p callbridge -p loadtest.
set -u
cd "$(dirname "$0")/.."
n=${1:?calls}; out=${2:?output file}
port=$((18000 + RANDOM % 1000))
dir=$(mktemp -d)
printf '[server]\nlisten = "127.0.0.1:%s"\nworker_threads = 1\n[storage]\ndatabase = ""\nmemory_max_calls = 100\n[engine.local]\ngreeting_wav = ""\n' "$port" > "$dir/cfg.toml"
RUST_LOG=warn taskset -c 0 heaptrack -o "$dir/srv" target/release/callbridge serve --config "$dir/cfg.toml" > "$dir/log" 2>&1 &
trap 'pkill -9 -f "callbridge serve --config $dir/cfg.toml" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
taskset -c 1 timeout 900 target/release/loadtest --url "ws://127.0.0.1:$port/twilio/stream" --carrier twilio \
  --calls 250 --total-calls "$n" --ramp 10s --duration 60m --scenario short --quiet --report-dir "$dir/report" \
  | grep -E 'failures|server:'
sleep 3
pkill -9 -f "callbridge serve --config $dir/cfg.toml"
sleep 5
heaptrack_print -f "$dir"/srv*.zst --print-leaks 0 --print-peaks 0 --print-allocators 0 --print-temporary 0 \
  --print-flamegraph "$out" --flamegraph-cost-type leaked | grep -E 'total memory leaked'
