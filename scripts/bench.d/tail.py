"""The steady-state tail taken apart (for bench.py --tail): where a p99 far above the broker's
own comes from. Three regions whose tables already hold `--events` rows each (filled by one
server-side INSERT … SELECT, as after a catch-up), a paced producer at `--rate` on librdkafka's
mock cluster (`rr-devtool broker`), and three variants of the same steady state, each for
`--steady-seconds`, on the same daemon:

  as-is        the regions as they are (fsync on, synchronous commit, checkpoints by time/size)
  async-commit `synchronous_commit = off` on the regions: the commit no longer waits for its
               WAL flush, so what disappears from the tail was the flush
  small-tables the same, after the three tables were emptied (TRUNCATE; the stored offsets stay)

For each: apply latency from the stamped rows (`replicated_at` is the apply transaction's start,
`created_at` the producer's send time), the daemon's histogram (to commit), one apply
transaction's duration, the broker's own share (a bare consumer), and a per-second series of
the stamped latency with the servers' checkpoints and autovacuum runs marked beside it (from
their logs), so that a spike can be laid against what the database was doing then."""
import datetime as dt
import os
import math
import re
import time

import psycopg

from steady import steady_phase
from world import REGIONS, STEADY_TOPIC, World, free_port, log, start_mock, stop, utc_now_text, wait_assigned

DB = "bench_tail"
VARIANTS = ("as-is", "async-commit", "small-tables")
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) (\w+) \[\d+\] LOG:  (.*)$")


def fill(world, i, n):
    """`n` rows of another origin into region `i`'s table, then VACUUM ANALYZE and a CHECKPOINT."""
    with psycopg.connect(world.dsn(i, DB), autocommit=True) as c:
        c.execute("""INSERT INTO messages (message_id, session_id, role, content, region, created_at, version)
                     SELECT gen_random_uuid(), 'fill-' || (g %% 20000),
                            CASE WHEN g %% 2 = 0 THEN 'user' ELSE 'assistant' END,
                            g || ': ' || repeat('agents answer questions about regions ', 5),
                            'sa-east-1', now() - interval '1 day', 1
                     FROM generate_series(1, %s) g""", (n,))
        c.execute("VACUUM ANALYZE")
        c.execute("CHECKPOINT")


def set_servers(world, **settings):
    for i in range(3):
        with psycopg.connect(world.dsn(i, "postgres"), autocommit=True) as c:
            for k, v in settings.items():
                c.execute(f"ALTER SYSTEM SET {k} = '{v}'")
            c.execute("SELECT pg_reload_conf()")


def server_events(world, since, until):
    """Checkpoints and autovacuum/autoanalyze runs of the three servers between two UTC times,
    as (start, end, region index, what)."""
    out = []
    for i, name in enumerate(("r1", "r2", "r3")):
        path = os.path.join(world.dir, "pg", name, "server.log")
        started = None
        for line in open(path, errors="replace"):
            m = LOG_TIME.match(line.rstrip("\n"))
            if not m:
                continue
            at = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.timezone.utc)  # log_timezone: UTC here
            text = m.group(3)
            if text.startswith("checkpoint starting"):
                started = at
            elif text.startswith("checkpoint complete") and started is not None:
                out.append((started, at, i, "C"))
                started = None
            elif text.startswith("automatic vacuum") or text.startswith("automatic analyze"):
                e = re.search(r"elapsed: ([0-9.]+) s", line)
                out.append((at - dt.timedelta(seconds=float(e.group(1)) if e else 0), at, i, "V"))
    return [e for e in out if e[1] >= since and e[0] <= until]


def series(world, dbs, since, seconds):
    """Per second of `created_at` since `since`: the rows of each region, their p99 and max of
    replicated_at - created_at (ms), and each region's longest gap between two consecutive apply
    transactions that began in that second (ms; a transaction is the rows of one `replicated_at`)."""
    n = int(seconds) + 2
    lat = [[[] for _ in range(n)] for _ in dbs]
    gaps = [[0.0] * n for _ in dbs]
    for k, (i, db) in enumerate(dbs):
        with psycopg.connect(world.dsn(i, db), autocommit=True) as c:
            rows = c.execute("""SELECT extract(epoch FROM created_at - %s::timestamptz),
                                       extract(epoch FROM replicated_at - created_at) * 1000,
                                       extract(epoch FROM replicated_at - %s::timestamptz)
                                FROM messages WHERE created_at >= %s ORDER BY replicated_at""",
                             (since, since, since)).fetchall()
        last = None
        for (at, ms, tx) in rows:
            lat[k][min(n - 1, max(0, int(at)))].append(float(ms))
            if last is not None and tx > last:
                g = min(n - 1, max(0, int(tx)))
                gaps[k][g] = max(gaps[k][g], (float(tx) - float(last)) * 1000)
            last = tx
    out = []
    for s in range(n):
        per = []
        for k in range(len(dbs)):
            xs = sorted(lat[k][s])
            per.append({"rows": len(xs), "p99_ms": round(xs[min(len(xs) - 1, int(0.99 * len(xs)))], 1) if xs else None,
                        "max_ms": round(xs[-1], 1) if xs else None, "max_tx_gap_ms": round(gaps[k][s], 1)})
        out.append({"second": s, "rows": sum(p["rows"] for p in per), "regions": per})
    return out


def figure(points, events, since):
    """One line per second: each region's p99 and its longest gap between two transactions, the
    worst p99 as a bar (log scale: 10 characters per decade from 1 ms), and what the servers did."""
    lines = ["  s    p99 ms r1/r2/r3 (longest gap between two transactions, ms)   worst p99, log scale          servers"]
    for p in points:
        if not p["rows"]:
            continue
        t0 = since + dt.timedelta(seconds=p["second"])
        t1 = t0 + dt.timedelta(seconds=1)
        marks = " ".join(sorted({f"{w}{i + 1}" for (a, b, i, w) in events if a < t1 and b >= t0}))
        cells = "  ".join(f"{r['p99_ms'] or 0:7.0f} ({r['max_tx_gap_ms']:5.0f})" for r in p["regions"])
        worst = max((r["p99_ms"] or 0) for r in p["regions"])
        bar = "#" * max(1, min(40, int(10 * math.log10(max(worst, 1)))))
        lines.append(f"{p['second']:3d}  {cells}  {bar:<40} {marks}")
    lines.append("  (C<n>: a checkpoint of region server n was running; V<n>: an autovacuum/autoanalyze run of server n)")
    return lines


def tail_run(args):
    world = World(args)
    dbs = [(i, DB) for i in range(3)]
    for i in range(3):
        world.create_db(i, DB)
    set_servers(world, log_autovacuum_min_duration="0", log_checkpoints="on")
    mock, brokers = start_mock(world, STEADY_TOPIC, args.partitions)
    results = {"mode": "tail", "rows_per_region": args.events, "rate": args.rate, "steady_seconds": args.steady_seconds,
               "batch_delay_ms": args.batch_delay_ms, "build": args.build,
               "uptime_at_start": open("/proc/loadavg").read().split()[:3], "variants": {}}
    d = pid = None
    try:
        http = free_port()
        cfg = world.config("tail", [(i, REGIONS[i], DB) for i in range(3)], http, brokers=brokers,
                           topic=STEADY_TOPIC, level="info")
        log(f"filling 3 regions with {args.events} rows each")
        t = time.monotonic()
        for i in range(3):
            fill(world, i, args.events)
        log(f"  filled in {time.monotonic() - t:.1f} s")
        d, pid = world.start_daemon(cfg, "tail")
        wait_assigned(world, "tail", d, count=3 * (args.connections or 2))  # every shard of every region
        applied = 0
        for k, variant in enumerate(VARIANTS):
            if variant == "small-tables":
                for i in range(3):  # the stored offsets stay: nothing is applied again
                    with psycopg.connect(world.dsn(i, DB), autocommit=True) as c:
                        c.execute("TRUNCATE messages")
                        c.execute("VACUUM ANALYZE messages")
                        c.execute("CHECKPOINT")
            set_servers(world, synchronous_commit="off" if variant == "async-commit" else "on")
            since = dt.datetime.now(dt.timezone.utc)
            since_text = utc_now_text()
            log(f"steady state, {variant}: {args.rate} events/s for {args.steady_seconds} s, 3 regions")
            figures, sent = steady_phase(world, args, d, pid, http, dbs, brokers, applied, seed=20 + k)
            applied += sent
            points = series(world, dbs, since_text, args.steady_seconds)
            events = server_events(world, since, since + dt.timedelta(seconds=args.steady_seconds + 5))
            figures["per_second"] = points
            figures["server_events"] = [{"start": a.isoformat(), "end": b.isoformat(), "region_server": i + 1, "what": w}
                                        for (a, b, i, w) in events]
            figures["figure"] = figure(points, events, since)
            results["variants"][variant] = figures
            log(f"  stamped p50/p99 {figures['stamped_ms']['p50']}/{figures['stamped_ms']['p99']} ms, daemon histogram "
                f"p99 {figures['daemon_histogram_ms']['p99']} ms, one transaction p99 {figures['batch_duration_ms']['p99']} ms, "
                f"broker p99 {figures['broker_floor_ms'].get('p99')} ms")
    finally:
        if d is not None:
            stop(d, pid)
        set_servers(world, synchronous_commit="on")
        stop(mock)
    return results


def tail_table(r):
    lines = [f"region-replicator steady-state tail — {r['rate']} events/s into 3 regions for {r['steady_seconds']} s, "
             f"tables filled with {r['rows_per_region']} rows, load {' '.join(r['uptime_at_start'])}", ""]
    lines.append(f"{'variant':14} {'stamped p50':>12} {'stamped p99':>12} {'daemon p99':>11} {'1 tx p99':>9} {'broker p99':>11} {'CPU µs/ev':>10}")
    for name, v in r["variants"].items():
        lines.append(f"{name:14} {v['stamped_ms']['p50'] or 0:12.1f} {v['stamped_ms']['p99'] or 0:12.1f} "
                     f"{v['daemon_histogram_ms']['p99']:11.1f} {v['batch_duration_ms']['p99']:9.1f} "
                     f"{v['broker_floor_ms'].get('p99') or 0:11.1f} {v['cpu_us_per_event_region']:10.2f}")
    for name, v in r["variants"].items():
        lines += ["", f"per second, {name}:"] + v["figure"]
    return lines
