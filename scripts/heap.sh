#!/usr/bin/env bash
# Where a call's memory goes: run a release callbridge under heaptrack (Debian's
# `heaptrack`) with CALLS loadtest calls on loopback, and print the heap held at the
# peak per call, by allocation site (first frames outside std/tokio's scheduler).
#   scripts/heap.sh [CALLS] [BINARY_DIR]
# BINARY_DIR (where the callbridge binary is) defaults to target/release; the loadtest is
# always target/release/loadtest (build both first: cargo build --release -p callbridge -p loadtest).
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-200}
bin=${2:-target/release}
port=$((18000 + RANDOM % 1000))
dir=$(mktemp -d)
printf '[server]\nlisten = "127.0.0.1:%s"\nworker_threads = 1\n[storage]\ndatabase = ""\n[turn]\nendpoint_silence_ms = 500\n' "$port" > "$dir/cfg.toml"
RUST_LOG=warn heaptrack -o "$dir/srv" "$bin/callbridge" serve --config "$dir/cfg.toml" > "$dir/log" 2>&1 &
ht=$!
trap 'pkill -INT -f "$dir/cfg.toml" 2>/dev/null || true; wait $ht 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
timeout 120 target/release/loadtest --url "ws://127.0.0.1:$port/twilio/stream" --carrier twilio --calls "$calls" \
  --ramp 5s --duration 10s --scenario talk=3,barge-in=1 --clips caller_leak_8k.wav --quiet --report-dir "$dir/report" | tail -3
pkill -INT -f "$dir/cfg.toml"
wait $ht 2>/dev/null || true
heaptrack_print -f "$dir"/srv*.zst -n 400 -s 400 -m 0 --print-peaks 1 --print-allocators 0 \
  --print-temporary 0 --print-leaks 0 > "$dir/peaks.txt" 2>/dev/null
python3 - "$dir/peaks.txt" "$calls" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().split('\n')
calls = int(sys.argv[2])
unit = {'': 1, 'K': 1e3, 'M': 1e6, 'G': 1e9}
skip = ('/rustc/', 'runtime/task', 'scheduler', 'coop', 'alloc/')
rows, i = [], 0
while i < len(lines):
    m = re.match(r'^\s*([\d.]+)([KMG]?)B? peak memory consumed over (\d+) calls from', lines[i])
    if not m:
        if lines[i].startswith('peak heap'):
            print(lines[i])
        i += 1
        continue
    frames, j = [], i + 1
    while j < len(lines) and lines[j].strip():
        s = lines[j].strip()
        if s.startswith('at ') and not any(k in s for k in skip):
            frames.append(re.sub(r'^.*index\.crates\.io-[0-9a-f]+/', '', s[3:]))
        j += 1
    rows.append((float(m.group(1)) * unit[m.group(2)], int(m.group(3)), frames[:3]))
    i = j
rows.sort(key=lambda r: -r[0])
print(f"heap at the peak per call: {sum(r[0] for r in rows) / calls:.0f} B over {calls} calls")
for size, n, frames in rows[:25]:
    print(f"{size / calls:8.0f} B/call  allocations {n:6d}  " + " | ".join(frames))
PY
