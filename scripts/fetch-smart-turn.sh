#!/usr/bin/env bash
# Fetch the smart-turn v3.2 end-of-turn model and the ONNX Runtime library that
# runs it, both from PyPI (no other network access needed), into models/:
#   models/smart-turn-v3.2-cpu.onnx  from pipecat-ai 1.14.0 (BSD-2-Clause, (c) Daily)
#   models/libonnxruntime.so         from onnxruntime 1.32.0 (MIT, (c) Microsoft)
# Then set turn.detector = "smart" (see README, "Turn-taking").
#   scripts/fetch-smart-turn.sh [DEST]
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-models}
model_sha=2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f
if [ -f "$dest/smart-turn-v3.2-cpu.onnx" ] && [ -f "$dest/libonnxruntime.so" ] \
  && echo "$model_sha  $dest/smart-turn-v3.2-cpu.onnx" | sha256sum -c --quiet 2>/dev/null; then
  echo "$dest: smart-turn model and ONNX Runtime already present"
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 (with pip) is needed to fetch from PyPI" >&2; exit 1; }
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$tmp" pipecat-ai==1.14.0 onnxruntime==1.32.0
python3 - "$tmp" "$dest" <<'PY'
import glob, shutil, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
def take(pattern, member_suffix, out):
    whl = glob.glob(f"{tmp}/{pattern}")[0]
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(member_suffix))
        with z.open(name) as src, open(f"{dest}/{out}", "wb") as dst:
            shutil.copyfileobj(src, dst)
    print(f"{dest}/{out}  <-  {whl.rsplit('/', 1)[-1]}:{name}")
take("pipecat_ai-*.whl", "smart_turn/data/smart-turn-v3.2-cpu.onnx", "smart-turn-v3.2-cpu.onnx")
take("onnxruntime-*.whl", "capi/libonnxruntime.so.1.32.0", "libonnxruntime.so")
PY
echo "$model_sha  $dest/smart-turn-v3.2-cpu.onnx" | sha256sum -c --quiet
chmod 644 "$dest/smart-turn-v3.2-cpu.onnx"
chmod 755 "$dest/libonnxruntime.so"
