"""Apply transaction size, A/B (for bench.py --batch-sizes): one backlog of `--events` events,
drained into one region again and again with each `apply.max_batch_events` in turn (a new
consumer group and a new database each time: the same work), `--rounds` rounds in alternating
order so that a change of the machine's load falls on every size alike; then the COPY ceiling of
the same rows. Prints events/s and the daemon's CPU per event of every run, and each size's
median."""
import os
import statistics

from runs import catchup_one, ceiling_1
from world import TOPIC, World, log, utc_now_text
from workload import produce_backlog


def sizes_run(args):
    world = World(args)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    n = args.events
    results = {"mode": "batch_sizes", "events": n, "sizes": sizes, "rounds": args.rounds, "build": args.build,
               "connections": args.connections, "uptime_at_start": open("/proc/loadavg").read().split()[:3],
               "started_at": utc_now_text(), "runs": []}
    produce_backlog(args.brokers, n, seed=42)
    for r in range(args.rounds):
        order = sizes if r % 2 == 0 else list(reversed(sizes))
        for size in order:
            args.batch_events = size
            name = f"sizes-{size}-{r}"
            log(f"round {r + 1}/{args.rounds}: catch-up, 1 region, apply.max_batch_events {size}")
            out = catchup_one(world, args, name, "bench_1r", TOPIC, n)
            out.update({"size": size, "round": r + 1, "load": open("/proc/loadavg").read().split()[0]})
            results["runs"].append(out)
            log(f"  {out['events_per_s']:,.0f} events/s, {out['cpu_us_per_event_region']} µs CPU per event, "
                f"mean batch {out['mean_batch_events']}")
    results["ceiling"], _, _ = ceiling_1(world)
    results["medians"] = {str(s): {
        "events_per_s": statistics.median(x["events_per_s"] for x in results["runs"] if x["size"] == s),
        "cpu_us_per_event_region": statistics.median(x["cpu_us_per_event_region"] for x in results["runs"] if x["size"] == s),
    } for s in sizes}
    results["finished_at"] = utc_now_text()
    return results


def sizes_table(r):
    ceil = r["ceiling"]["rows_per_s"]
    lines = [f"apply transaction size — {r['events']:,} events into 1 region, {r['rounds']} rounds, "
             f"{r['build']} build, load at start {' '.join(r['uptime_at_start'])}", "",
             f"{'max_batch_events':>16} {'round':>5} {'events/s':>10} {'× COPY':>7} {'CPU µs/ev':>10} {'mean batch':>10} {'load':>5}"]
    for x in r["runs"]:
        lines.append(f"{x['size']:16d} {x['round']:5d} {x['events_per_s']:10,.0f} {x['events_per_s'] / ceil:7.2f} "
                     f"{x['cpu_us_per_event_region']:10.2f} {x['mean_batch_events']:10} {x['load']:>5}")
    lines += ["", f"COPY ceiling of the same rows: {ceil:,.0f} rows/s", "medians:"]
    for s, m in r["medians"].items():
        lines.append(f"{s:>16} {m['events_per_s']:10,.0f} events/s = {m['events_per_s'] / ceil:.2f} × COPY, "
                     f"{m['cpu_us_per_event_region']:.2f} µs CPU per event")
    return lines
