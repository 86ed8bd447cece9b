#!/usr/bin/env python3
"""Make tests/data/smart_turn/: caller windows, pipecat's log-mel features and
onnxruntime's answers, the reference tests/turn_model.rs checks the Rust front
end and model against. Everything comes from PyPI (provenance in
fixtures/README.md):

    pip install numpy soundfile soxr onnxruntime==1.32.0
    pip download --no-deps --only-binary=:all: -d WHEELS \
        pipecat-ai==1.14.0 moonshine-voice==0.1.5 useful-moonshine-onnx==20251121
    scripts/make-smart-turn-reference.py WHEELS

Five evaluators of the same graph (onnxruntime at each graph optimisation
level, and at two threads) give the spread; the reference probability is
pipecat's own configuration (ENABLE_ALL, one thread).
"""
import glob, io, json, sys, zipfile

import numpy as np
import onnxruntime as ort
import soundfile as sf
import soxr

wheels, out = sys.argv[1], "tests/data/smart_turn"


def member(pattern, suffix):
    with zipfile.ZipFile(glob.glob(f"{wheels}/{pattern}")[0]) as z:
        return z.read(next(n for n in z.namelist() if n.endswith(suffix)))


def pcm16k(pattern, suffix):
    audio, rate = sf.read(io.BytesIO(member(pattern, suffix)), dtype="float64")
    if rate != 16000:
        audio = soxr.resample(audio, rate, 16000, quality="VHQ")
    return np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)


sys.path.insert(0, wheels + "/pipecat-src")
with zipfile.ZipFile(glob.glob(f"{wheels}/pipecat_ai-*.whl")[0]) as z:
    z.extractall(wheels + "/pipecat-src", [n for n in z.namelist() if "smart_turn" in n])
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features  # noqa: E402

model = f"{wheels}/pipecat-src/pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
two_cities = pcm16k("moonshine_voice-*.whl", "assets/two_cities.wav")
beckett = pcm16k("useful_moonshine_onnx-*.whl", "assets/beckett.wav")
# (name, source, start, end): sample indices at 16 kHz; each window ends in a pause.
windows = [
    ("hope", two_cities, 288000, 303200),  # "...it was the spring of hope," +200 ms
    ("heaven", two_cities, 290720, 418720),  # "...we were all going direct to Heaven," mid-sentence
    ("better", beckett, 15840, 143840),  # "...Fail again. Fail better." the end
]


def session(level, threads):
    so = ort.SessionOptions()
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    so.intra_op_num_threads = threads
    so.graph_optimization_level = level
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


L = ort.GraphOptimizationLevel
evaluators = [session(L.ORT_ENABLE_ALL, 1), session(L.ORT_DISABLE_ALL, 1), session(L.ORT_ENABLE_BASIC, 1),
              session(L.ORT_ENABLE_EXTENDED, 1), session(L.ORT_ENABLE_ALL, 2)]
cases = []
for name, src, a, b in windows:
    pcm = src[a:b]
    sf.write(f"{out}/{name}_16k.wav", pcm, 16000, subtype="PCM_16")
    x = pcm.astype(np.float32) / 32768.0
    x = x[-128000:] if len(x) > 128000 else np.pad(x, (128000 - len(x), 0))
    feats = compute_whisper_log_mel_features(x, do_normalize=True)
    feats.astype("<f4").tofile(f"{out}/{name}_features.f32")
    ps = [float(s.run(None, {"input_features": feats[None]})[0][0].item()) for s in evaluators]
    cases.append({"name": name, "features": f"{name}_features.f32", "probability": ps[0],
                  "spread": [min(ps), max(ps)], "decision": "COMPLETE" if ps[0] > 0.5 else "INCOMPLETE",
                  "evaluators": ps})
    print(name, ps)
json.dump({"model": "smart-turn-v3.2-cpu.onnx (pipecat-ai 1.14.0)", "onnxruntime": ort.__version__,
           "cases": cases}, open(f"{out}/reference.json", "w"), indent=1)
