#!/usr/bin/env python3
"""Percentiles (upper bucket bounds) of the cascaded engine's stage latencies and
engine-link send delays from a Prometheus text dump of callbridge's /metrics:
    scripts/stage-percentiles.py reports/load-250/server-metrics.txt"""
import collections
import re
import sys

PATTERN = re.compile(
    r'callbridge_(?:stage_latency_seconds_bucket\{stage|engine_link_send_delay_seconds_bucket\{engine)'
    r'="(\w+)",le="([^"]+)"\} (\d+)'
)

buckets = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = PATTERN.match(line)
    if m:
        le = float("inf") if m.group(2) == "+Inf" else float(m.group(2))
        buckets[m.group(1)].append((le, int(m.group(3))))
for name, v in sorted(buckets.items()):
    v.sort()
    n = v[-1][1]
    if n == 0:
        continue

    def q(p):
        return next(le for le, c in v if c >= p * n) * 1000

    print(f"{name:20s} n={n} p50<={q(.5):.1f}ms p95<={q(.95):.1f}ms p99<={q(.99):.1f}ms")
