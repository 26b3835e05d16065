#!/usr/bin/env python3
"""The benchmark driver behind `scripts/bench` (which sets up the world and calls this).

Runs, in one go against the same broker and Postgres servers:
  ceiling   COPY (text) of the very rows region-replicator applied, into an empty copy of the
            messages table (same indexes), in the same database          -> rows/s
  naive     scripts/bench.d/naive_replicator.py: one INSERT per event     -> events/s
  catch-up  region-replicator draining a backlog of N events, 1 and 3 regions
  re-apply  the same range again onto regions that already hold it
  steady    a producer at a fixed rate; apply latency p50/p99/max; the same again while
            `region-replicator verify` runs in a loop against the same regions
  verify    `region-replicator verify` on N identical rows x 3 regions, then with 10 scattered
            differences, beside a naive full download-and-compare of the same tables
  resources daemon CPU (user+sys) per event and peak RSS while draining
and prints one table and writes the figures as JSON.

Throughput clocks start when a region's stored offsets first move (so the consumer-group join
is excluded) and stop when they reach the produced count; they are read from each region's
database (`replicator_offsets`), not from broker watermarks (Tansu's under-read by a batch).

This file is the driver; beside it: world.py (topics, regions, the Postgres servers, the
daemon's config and processes), workload.py (the events and the producers), measure.py
(offsets and metrics), runs.py (each contender's run), steady.py (the steady state), verify.py
(the verify phase) and report.py (targets, table and JSON).
"""
import argparse
import sys

from report import write
from runs import run
from workload import broker_floor, produce_at_rate
from world import TOPIC


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--produce-at-rate", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--broker-floor", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--brokers")
    ap.add_argument("--topic", default=TOPIC)
    ap.add_argument("--pg-ports")
    ap.add_argument("--bin-dir")
    ap.add_argument("--work-dir")
    ap.add_argument("--json")
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--steady-seconds", type=float, default=60)
    ap.add_argument("--naive-seconds", type=float, default=30)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--batch-events", type=int, default=1000)
    ap.add_argument("--batch-delay-ms", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--verify-rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--build", default="release")
    ap.add_argument("--capture", action="store_true", help="only the capture measurement (capture.py)")
    ap.add_argument("--capture-rows", type=int, default=200_000)
    ap.add_argument("--tail", action="store_true", help="only the steady-state tail analysis (tail.py)")
    ap.add_argument("--batch-sizes", default=None, help="only the transaction-size A/B (sizes.py), e.g. 1000,5000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fresh", action="store_true", help="only the /fresh load measurement (fresh.py)")
    ap.add_argument("--fresh-rate", type=int, default=1000, help="/fresh requests per second of the generator")
    ap.add_argument("--fresh-rounds", type=int, default=2, help="pairs of catch-ups (alone, with /fresh)")
    ap.add_argument("--fresh-load", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fresh-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--fresh-region", help=argparse.SUPPRESS)
    ap.add_argument("--capture-backlog-only", action="store_true", help="capture: only the catch-up and the slot backlog")
    ap.add_argument("--connections", type=int, default=None, help="apply.connections (written only when given)")
    args = ap.parse_args()
    if args.broker_floor:
        broker_floor(args.brokers, args.topic, args.partitions, args.steady_seconds)
        return 0
    if args.produce_at_rate:
        produce_at_rate(args.brokers, args.topic, args.rate, args.steady_seconds, seed=args.seed)
        return 0
    if args.batch_sizes:
        from sizes import sizes_run
        write(sizes_run(args), args.json)
        return 0
    if args.tail:
        from tail import tail_run
        write(tail_run(args), args.json)
        return 0
    if args.fresh_load:
        from fresh import load_main
        load_main(args)
        return 0
    if args.fresh:
        from fresh import fresh_run
        write(fresh_run(args), args.json)
        return 0
    if args.capture:
        from capture import capture_run
        write(capture_run(args), args.json)
        return 0
    write(run(args), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
