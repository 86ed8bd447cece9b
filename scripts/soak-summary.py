#!/usr/bin/env python3
"""Summarise a soak run (scripts/soak.sh): OUT/report.json and OUT/server-metrics.txt.

long:  failures, underruns, premature/false clears, and response and barge-in
       latency (p50/p95) in the first vs the last minute of the steady state.
short: calls placed and failed, server RSS over the run (after the first tenth
       of the calls vs the end), and what is left once they are over: live
       calls and the number of metric series (labels must not grow per call)."""
import json, sys

mode, out = sys.argv[1], sys.argv[2]
r = json.load(open(f"{out}/report.json"))
metrics = open(f"{out}/server-metrics.txt").read().splitlines()


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * len(v)))] if v else float("nan")


def window(series, lo, hi):
    return [ms for t, ms in series if lo <= t < hi]


failures = sum(r["failures"].values()) if isinstance(r["failures"], dict) else len(r["failures"])
print(f"calls {r['calls']} connections {r['connections']} turns {r['turns']} failures {failures} {r['failures']}")
print(f"underruns {r['underruns']} ({r['underrun_total_ms']:.0f} ms) premature {r['premature_turns']} false clears {r['false_clears']}")
if mode == "long":
    start = r["ramp_s"]
    end = r["ramp_s"] + r["duration_s"]
    for name in ["response_series", "barge_in_series"]:
        first = window(r[name], start, start + 60)
        last = window(r[name], end - 60, end)
        p50a, p50b, p95a, p95b = pct(first, 50), pct(last, 50), pct(first, 95), pct(last, 95)
        print(f"{name}: first minute n={len(first)} p50 {p50a:.1f} p95 {p95a:.1f} | last minute n={len(last)} "
              f"p50 {p50b:.1f} p95 {p95b:.1f} | p50 change {100 * (p50b - p50a) / p50a:+.1f} %")
else:
    s = r["server"]["samples"]
    if s:
        tenth = s[max(0, len(s) // 10)]
        print(f"server rss: idle {r['server']['idle_rss_kib']} KiB, after a tenth of the run {tenth['rss_kib']} KiB "
              f"(t={tenth['t']:.0f}s), peak {r['server']['peak_rss_kib']} KiB, last {s[-1]['rss_kib']} KiB "
              f"(t={s[-1]['t']:.0f}s): {100 * (s[-1]['rss_kib'] - tenth['rss_kib']) / tenth['rss_kib']:+.1f} % over the run")
series = [l for l in metrics if l and not l.startswith("#")]
active = [l for l in series if l.startswith("callbridge_calls_active")]
print(f"after the run: {active[0] if active else 'callbridge_calls_active ?'}; metric series {len(series)}")
# Frames the server dropped (queue full, stale audio) and how calls ended.
for prefix in ["callbridge_dropped_frames_total", "callbridge_calls_ended_total", "callbridge_playback_underruns_total"]:
    for l in series:
        if l.startswith(prefix):
            print(l)
lag = r.get("generator_send_lag")
if lag:
    print(f"generator send lag p50 {lag['p50_ms']} ms p99 {lag['p99_ms']} ms max {lag['max_ms']} ms, "
          f"{lag['late_5ms']} of {lag['frames']} frames >= 5 ms late")
