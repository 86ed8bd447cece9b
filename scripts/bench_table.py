#!/usr/bin/env python3
"""Markdown table from one or more saved `cargo bench --bench frame` outputs:
median of the runs' point estimates, and the range of those estimates."""
import re, statistics, sys

UNIT = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3}
runs = []
for path in sys.argv[1:]:
    res, name = {}, None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip()
        m = re.match(r"^([a-z0-9_]+/[a-z0-9_]+)", line)
        if m and not line.startswith("Benchmarking"):
            name = m.group(1)
        t = re.search(r"time:\s+\[([\d.]+) (\S+) ([\d.]+) (\S+) ([\d.]+) (\S+)\]", line)
        if t and name:
            res[name] = float(t.group(3)) * UNIT[t.group(4)]
            name = None
    runs.append(res)
names = [n for n in runs[0]] if runs else []
print(f"| benchmark (per 20 ms frame) | median of {len(runs)} run(s), µs | range, µs |")
print("|---|---|---|")
for n in names:
    vals = [r[n] for r in runs if n in r]
    med = statistics.median(vals)
    print(f"| `{n}` | {med:.3f} | {min(vals):.3f}–{max(vals):.3f} |")
