#!/usr/bin/env python3
"""Diff two collapsed-stack files of leaked bytes (scripts/heap-churn.sh at two call counts):
totals, then the stacks that grew most, leaf first, names shortened from Rust's v0 mangling.
    scripts/heap-diff.py SMALL.fg LARGE.fg [TOP=8]"""
import collections, re, sys


def load(path):
    d = collections.Counter()
    for line in open(path, errors="replace"):
        stack, _, cost = line.rstrip("\n").rpartition(" ")
        if cost.isdigit():
            d[stack] += int(cost)
    return d


def name(frame):
    fn = frame.split(" (")[0]
    loc = frame[len(fn):].strip()
    ids = re.findall(r"\d+([A-Za-z_][A-Za-z0-9_]*)", fn)
    return ("::".join(ids[-3:]) if ids else fn) + (" " + loc if loc else "")


a, b = load(sys.argv[1]), load(sys.argv[2])
top = int(sys.argv[3]) if len(sys.argv) > 3 else 8
print(f"held: {sum(a.values())} B -> {sum(b.values())} B ({sum(b.values()) - sum(a.values()):+} B)")
diff = collections.Counter({k: b[k] - a[k] for k in set(a) | set(b)})
for stack, grew in diff.most_common(top):
    if grew <= 0:
        break
    frames = [name(f) for f in reversed(stack.split(";")) if f]
    print(f"\n{grew:+} B")
    for f in frames[:40]:
        print("   ", f)
