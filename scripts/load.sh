#!/usr/bin/env bash
# Run one loadtest against a freshly started callbridge, server pinned to CPU 0 and
# the load generator to CPU 1, both on loopback. Stops the server when done.
#   scripts/load.sh CALLS [SCENARIO] [DURATION] [REPORT_DIR] [EXTRA_SERVER_TOML]
# Extra loadtest flags can be passed in LOADTEST_ARGS (e.g. --clips caller_leak_8k.wav).
# STORE_DB=PATH keeps the call store in that SQLite file (default: in memory, "").
# CARRIER=telnyx plays Telnyx callers on /telnyx/stream (default twilio); CARRIER=webrtc places
# browser calls through POST /webrtc/offer (real WebRTC peers; the scenario is then fixed:
# barge into each answer, talk into the quiet line, see loadtest::webrtc).
# ENGINE=openai_realtime runs the FAKE Realtime server (loadtest's fake_realtime, on CPU 1
# with the generator) and points callbridge's OpenAI Realtime engine at it.
# ENGINE=cascaded runs loadtest's fake_cascade (FAKE Deepgram, ElevenLabs and backend, on
# CPU 1), registers a number whose backend it is, and places every call through the voice
# webhook so each caller turn is a blocking turn.user answered at once.
# CLUSTER=1 runs the server in cluster mode against a redis-server of its own (on CPU 1 with
# the generator, no persistence, stopped at the end) and saves Redis's per-command counts in
# REPORT_DIR/redis-commandstats.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:?calls}
scenario=${2:-talk=3,barge-in=1}
duration=${3:-30s}
out=${4:-reports/load-$calls}
extra=${5:-}
port=$((18000 + RANDOM % 1000))
cfg=$(mktemp)
server_extra=""
[ "${ENGINE:-local}" = cascaded ] && server_extra='allow_unsigned_tenant_calls = true'
printf '[server]\nlisten = "127.0.0.1:%s"\nworker_threads = 1\n%s\n[storage]\ndatabase = "%s"\n%s\n' "$port" "$server_extra" "${STORE_DB:-}" "$extra" > "$cfg"
cargo build --release -q -p callbridge -p loadtest
fake_pid=""
if [ "${ENGINE:-local}" = openai_realtime ]; then
  fport=$((19000 + RANDOM % 1000))
  taskset -c 1 target/release/fake_realtime --port "$fport" > /dev/null 2>&1 &
  fake_pid=$!
  printf '[engine]\nkind = "openai_realtime"\n' >> "$cfg"
  export OPENAI_API_KEY=fake-key OPENAI_REALTIME_URL="ws://127.0.0.1:$fport/v1/realtime"
fi
if [ "${ENGINE:-local}" = cascaded ]; then
  furls=$(mktemp)
  taskset -c 1 target/release/fake_cascade > "$furls" 2>/dev/null &
  fake_pid=$!
  for _ in $(seq 50); do [ "$(wc -l < "$furls")" -ge 3 ] && break; sleep 0.1; done
  dg=$(sed -n 1p "$furls"); el=$(sed -n 2p "$furls"); cb=$(sed -n 3p "$furls"); rm -f "$furls"
  printf '[engine.cascaded]\ngreeting = ""\n[callbacks]\nallow_private_networks = ["127.0.0.0/8"]\n[[numbers]]\nnumber = "+15550100001"\ncallback_url = "%s"\nsecret = "whsec_loadtest_0123456789"\n' "$cb" >> "$cfg"
  export DEEPGRAM_API_KEY=fake DEEPGRAM_URL="$dg" ELEVENLABS_API_KEY=fake ELEVENLABS_URL="$el"
  LOADTEST_ARGS="${LOADTEST_ARGS:-} --webhook http://127.0.0.1:$port/twilio/voice --to +15550100001"
fi
redis_pid=""
if [ "${CLUSTER:-0}" = 1 ]; then
  rport=$((20000 + RANDOM % 1000))
  taskset -c 1 redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no > /dev/null 2>&1 &
  redis_pid=$!
  for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  printf '[cluster]\nredis_url = "redis://127.0.0.1:%s/"\nnode_id = "load"\n' "$rport" >> "$cfg"
fi
mkdir -p "$(dirname "$out")"
RUST_LOG=warn taskset -c 0 target/release/callbridge serve --config "$cfg" > "$out.server.log" 2>&1 &
pid=$!
trap 'kill $pid $fake_pid $redis_pid 2>/dev/null; wait $pid $fake_pid $redis_pid 2>/dev/null; rm -f "$cfg"' EXIT
for _ in $(seq 50); do curl -sf "127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
mkdir -p "$out"
carrier=${CARRIER:-twilio}
taskset -c 1 target/release/loadtest --url "ws://127.0.0.1:$port/$carrier/stream" --carrier "$carrier" --calls "$calls" \
  --ramp 10s --duration "$duration" --scenario "$scenario" --server-pid "$pid" --report-dir "$out" --quiet ${LOADTEST_ARGS:-}
curl -s "127.0.0.1:$port/metrics" > "$out/server-metrics.txt" || true
[ -n "$redis_pid" ] && redis-cli -p "$rport" info commandstats > "$out/redis-commandstats.txt" || true
