#!/usr/bin/env bash
# Soak and leak runs against a fresh server (server on CPU 0, generator on CPU 1, loopback;
# scripts/load.sh starts and stops everything), then scripts/soak-summary.py on the report.
#   scripts/soak.sh long  [CALLS=250] [DURATION=10m] [OUT=reports/soak-long]
#       the loadtest mix with barge-ins and DTMF (talk=3,barge-in=1,dtmf=1) for DURATION:
#       failures, underruns, and response / barge-in latency in the first vs the last minute.
#   scripts/soak.sh short [TOTAL=10000] [SLOTS=250] [OUT=reports/soak-short]
#       TOTAL short calls (one turn, the answer heard, hang up), SLOTS at a time: server RSS
#       over the run, and what is left once they are over (live calls, metric series).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?long or short}
case "$mode" in
  long)
    calls=${2:-250}; duration=${3:-10m}; out=${4:-reports/soak-long}
    # The call store on disk, as deployed: an in-memory store would hold every live
    # call's whole conversation in RSS, which is not a leak but would look like one.
    db=$(mktemp -d)
    trap 'rm -rf "$db"' EXIT
    STORE_DB="$db/calls.db" scripts/load.sh "$calls" "talk=3,barge-in=1,dtmf=1" "$duration" "$out"
    ;;
  short)
    total=${2:-10000}; slots=${3:-250}; out=${4:-reports/soak-short}
    # The in-memory call store keeps 100 calls (so what it holds does not look like a
    # leak; the line lands in load.sh's [storage]), and no greeting keeps calls short.
    LOADTEST_ARGS="${LOADTEST_ARGS:-} --total-calls $total" \
      scripts/load.sh "$slots" short 60m "$out" $'memory_max_calls = 100\n[engine.local]\ngreeting_wav = ""'
    ;;
  *) echo "usage: scripts/soak.sh long|short …" >&2; exit 2 ;;
esac
python3 scripts/soak-summary.py "$mode" "$out"
