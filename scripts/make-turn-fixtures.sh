#!/usr/bin/env bash
# Regenerate fixtures/turns/paused: synthetic callers (espeak-ng, en-us) who
# pause mid-sentence for 300-1,000 ms or trail off with "um". Each phrase is
# synthesised on its own (ending in a comma where the sentence goes on, so the
# voice keeps a continuation rise), then joined with digital silence at 8 kHz.
# Needs espeak-ng and sox (Debian packages); the outputs are committed, so
# tests and CI do not need them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=fixtures/turns/paused
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say() { espeak-ng -v en-us -s 165 -w "$tmp/p.wav" "$1"; sox "$tmp/p.wav" -r 8000 -b 16 "$2" rate -v 8000 silence 1 0.01 0.3% reverse silence 1 0.01 0.3% reverse; }
gap() { sox -n -r 8000 -b 16 -c 1 "$2" trim 0 "$(echo "$1/1000" | bc -l)"; }
# make NAME "phrase" PAUSE_MS "phrase" PAUSE_MS "phrase" ...
make() {
  local name=$1; shift
  local parts=() i=0
  while [ $# -gt 0 ]; do
    say "$1" "$tmp/s$i.wav"; parts+=("$tmp/s$i.wav"); shift; i=$((i + 1))
    if [ $# -gt 0 ]; then gap "$1" "$tmp/g$i.wav"; parts+=("$tmp/g$i.wav"); shift; fi
  done
  sox "${parts[@]}" "$out/$name.wav"
}
make address_pause700     "My address is forty two," 700 "Maple Street."
make heater_pause400      "I need someone to look at my water heater," 400 "it has been leaking since last night."
make tomorrow_pause500_300 "Can you send somebody" 500 "tomorrow morning," 300 "before nine?"
make furnace_pause1000    "The furnace makes a loud noise," 1000 "and then it shuts off."
make name_pause600        "My name is John," 600 "Smith."
make um_start_pause600    "Um," 600 "I think the breaker keeps tripping."
make sink_trailing_um     "The leak is under the kitchen sink, um," 650 "um."
make thursday_complete    "Thursday afternoon is fine."
make yes_complete         "Yes, that works for me."
make emergency_pause300   "There is water everywhere," 300 "in the basement," 450 "please hurry."
