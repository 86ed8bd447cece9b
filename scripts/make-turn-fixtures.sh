#!/usr/bin/env bash
# Regenerate fixtures/turns/paused: synthetic callers (espeak-ng, en-us) who
# pause mid-sentence for 300-1,000 ms or trail off with "um". Each turn is ONE
# utterance with SSML <break>s in it, so the voice keeps its mid-sentence
# intonation before a pause (phrases synthesised separately would each end
# like a finished sentence). Resampled to 8 kHz, 16-bit.
# Needs espeak-ng and sox (Debian packages); the outputs are committed, so
# tests and CI do not need them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=fixtures/turns/paused
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# make NAME "text with <break time='700ms'/> marks"
make() {
  espeak-ng -m -v en-us -s 165 -w "$tmp/t.wav" "<speak>$2</speak>"
  sox "$tmp/t.wav" -r 8000 -b 16 "$out/$1.wav" rate -v 8000 silence 1 0.01 0.3% reverse silence 1 0.01 0.3% reverse
}
b() { echo "<break time=\"${1}ms\"/>"; }
make address_pause700      "My address is forty two $(b 700) Maple Street."
make heater_pause400       "I need someone to look at my water heater, $(b 400) it has been leaking since last night."
make tomorrow_pause500_300 "Can you send somebody $(b 500) tomorrow morning, $(b 300) before nine?"
make furnace_pause1000     "The furnace makes a loud noise, $(b 1000) and then it shuts off."
make name_pause600         "My name is John $(b 600) Smith."
make um_start_pause600     "Um, $(b 600) I think the breaker keeps tripping."
make sink_trailing_um      "The leak is under the kitchen sink, um, $(b 650) um"
make thursday_complete     "Thursday afternoon is fine."
make yes_complete          "Yes, that works for me."
make emergency_pause300    "There is water everywhere $(b 300) in the basement, $(b 450) please hurry."
make unit_pause700         "It's apartment $(b 700) four B."
make plumber_pause800      "I was wondering if you could $(b 800) send a plumber today."
