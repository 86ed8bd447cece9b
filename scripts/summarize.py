#!/usr/bin/env python3
"""Summarize a capacity series: medians (and min–max) over repeats per load."""
import json, pathlib, re, statistics, sys

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "reports/capacity")
runs = {}
for d in sorted(out.glob("n*-r*")):
    m = re.match(r"n(\d+)-r(\d+)$", d.name)
    if not m or not (d / "report.json").exists():
        continue
    runs.setdefault(int(m.group(1)), []).append(json.loads((d / "report.json").read_text()))

def get(r, *path):
    for p in path:
        r = r.get(p) if isinstance(r, dict) else None
    return r

def cell(vals, fmt="{:.1f}"):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    med = statistics.median(vals)
    return (fmt + " ({}–{})").format(med, fmt.format(min(vals)), fmt.format(max(vals))) if len(vals) > 1 else fmt.format(med)

base = out / "baseline" / "report.json"
if base.exists():
    b = json.loads(base.read_text())
    print(f"baseline (2 calls, 60 s): response p50 {b['response_latency_ms']['p50']:.1f} p99 {b['response_latency_ms']['p99']:.1f} ms; "
          f"talk p99 {get(b, 'by_scenario', 'talk', 'response_latency_ms', 'p99')}; barge-in p95 {b['barge_in_latency_ms']['p95']}")
print("| calls | runs | talk response p50 ms | talk response p99 ms | all response p99 ms | barge-in p95 ms | underruns | failures | server CPU % | CPU %/call | RSS KiB/call | generator CPU % | generator send lag p99 ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for n in sorted(runs):
    rs = runs[n]
    print("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        n, len(rs),
        cell([get(r, "by_scenario", "talk", "response_latency_ms", "p50") for r in rs]),
        cell([get(r, "by_scenario", "talk", "response_latency_ms", "p99") for r in rs]),
        cell([get(r, "response_latency_ms", "p99") for r in rs]),
        cell([get(r, "barge_in_latency_ms", "p95") for r in rs]),
        cell([r["underruns"] for r in rs], "{:.0f}"),
        cell([sum(r["failures"].values()) for r in rs], "{:.0f}"),
        cell([get(r, "server", "steady_cpu_percent", "p50") for r in rs]),
        cell([get(r, "server", "cpu_percent_per_call") for r in rs], "{:.3f}"),
        cell([get(r, "server", "rss_kib_per_call") for r in rs], "{:.0f}"),
        cell([get(r, "generator_cpu_percent", "p50") for r in rs]),
        cell([get(r, "generator_send_lag", "p99_ms") for r in rs]),
    ))
