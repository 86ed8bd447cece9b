#!/usr/bin/env bash
# The whole test suite. Fetches the smart-turn model and ONNX Runtime from
# PyPI into models/ the first time (scripts/fetch-smart-turn.sh), then runs
# every test in the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-smart-turn.sh models
CALLBRIDGE_SMART_TURN_DIR="$PWD/models" cargo test --workspace "$@"
