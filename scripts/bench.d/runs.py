"""The benchmark's runs (for bench.py), each contender against the same broker and Postgres
servers, in the order `run` calls them: region-replicator's catch-up into 1 region, the COPY
ceiling, the naive replicator, the KC-style peer, the catch-up into 3 regions and their ceiling,
the re-apply, then the steady state (steady.py) and the verify phase (verify.py)."""
import json
import os
import subprocess
import sys
import threading
import time

import psycopg

from measure import drain, mean_batch_events, scrape
from steady import steady_runs
from verify import verify_phase
from workload import produce_backlog
from world import (perf_report, KC_EVENTS, KC_TOPIC, REGIONS, TOPIC, World, free_port, in_parallel, log, peak_rss_mb, stop,
                   utc_now_text)

HERE = os.path.dirname(__file__)


def catchup_one(world, args, name, db, topic, n, perf_data=None):
    """region-replicator draining a backlog of `n` events on `topic` into one region (server 1,
    a new database `db`)."""
    world.create_db(0, db)
    http = free_port()
    cfg = world.config(name, [(0, REGIONS[0], db)], http, topic=topic)
    with psycopg.connect(world.dsn(0, db), autocommit=True) as c:
        c.execute("CHECKPOINT")  # start clean of the previous phase's dirty pages, as the KC-style peer does
    d, pid = world.start_daemon(cfg, name, perf_data)
    try:
        per, cpu, span = drain(world, d, pid, [(0, db)], n, args.timeout)
        rss = peak_rss_mb(pid)
        batch = mean_batch_events(scrape(http))
    finally:
        stop(d, pid)
    return {"events": per[0]["events"], "events_per_s": per[0]["events_per_s"], "seconds": per[0]["seconds"],
            "cpu_us_per_event_region": round(cpu / max(per[0]["events"], 1) * 1e6, 2),
            "cpu_s_per_1000_events": round(cpu / max(per[0]["events"], 1) * 1000, 4),
            "peak_rss_mb": round(rss, 1), "rss_before_drain_mb": round(drain.rss_at_start, 1),
            "mean_batch_events": batch}


def copy_rows(dsn, buf, table, barrier=None):
    """Times one `COPY … FROM STDIN` (text) of `buf` into a new empty `LIKE messages INCLUDING ALL`
    table, in one transaction; with `barrier`, the COPY starts when every party is ready.
    Returns (start, end) on the monotonic clock."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {table}")
        c.execute(f"CREATE TABLE {table} (LIKE messages INCLUDING ALL)")
        c.execute("CHECKPOINT")
        if barrier is not None:
            barrier.wait()
        t0 = time.monotonic()
        with c.transaction():
            with c.cursor().copy(f"COPY {table} (message_id, session_id, role, content, region, created_at, "
                                 "version, replicated_at) FROM STDIN") as cp:
                view = memoryview(buf)
                for k in range(0, len(view), 1 << 20):
                    cp.write(view[k:k + (1 << 20)])
        t1 = time.monotonic()
        c.execute(f"DROP TABLE {table}")
    return t0, t1



def catchup_1(world, args, n):
    """region-replicator draining the backlog into 1 region (server 1, its own database); with
    --profile under `perf record`, its report written beside the JSON."""
    log("catch-up, 1 region")
    perf_data = os.path.join(world.dir, "perf-1r.data") if args.profile else None
    out = catchup_one(world, args, "one", "bench_1r", TOPIC, n, perf_data)
    if perf_data is not None:
        path = perf_report(perf_data, args.json, ".perf-catchup-1r.txt")
        log(f"  profile of the daemon (perf, cpu-clock) while draining: {path}")
    log(f"  {out}")
    return out


def ceiling_1(world):
    """The ceiling: COPY of the rows the 1-region catch-up applied into an empty copy of the
    table, same database. Returns (figures, rows, the rows as COPY text)."""
    log("ceiling: COPY of the same rows")
    with psycopg.connect(world.dsn(0, "bench_1r"), autocommit=True) as c:
        rows = c.execute("SELECT count(*) FROM messages").fetchone()[0]
        buf = bytearray()
        with c.cursor().copy("COPY (SELECT message_id, session_id, role, content, region, created_at, version, "
                             "replicated_at FROM messages) TO STDOUT") as cp:
            for chunk in cp:
                buf += chunk
    t0, t1 = copy_rows(world.dsn(0, "bench_1r"), buf, "ceiling_messages")
    secs = t1 - t0
    out = {"rows": rows, "seconds": round(secs, 3), "rows_per_s": round(rows / secs, 1)}
    log(f"  {out}")
    return out, rows, buf


def naive(world, args, n):
    """The naive replicator (the article's way), same server, its own database."""
    log("naive replicator (the article's one INSERT per event)")
    world.create_db(0, "bench_naive")
    world.config("naive", [(0, REGIONS[0], "bench_naive")], free_port())  # migrate: the same tables
    out = subprocess.run([sys.executable, os.path.join(HERE, "naive_replicator.py"),
                          "--brokers", args.brokers, "--topic", TOPIC, "--partitions", str(args.partitions),
                          "--dsn", world.dsn(0, "bench_naive"), "--seconds", str(args.naive_seconds),
                          "--max-events", str(n)], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"  {result}")
    return result


def kc(world, args, n, catchup):
    """The KC-style peer (an emulation of Kafka Connect's JDBC sink, upsert mode), same server,
    its own database, on a backlog of at most KC_EVENTS events; the daemon on the same backlog
    (`catchup`, the 1-region catch-up's figures, when that is the whole backlog).
    Returns (the daemon's figures, the peer's)."""
    kc_n = min(n, KC_EVENTS)
    if kc_n == n:
        kc_topic, daemon = TOPIC, dict(catchup, source="catchup_1")
    else:
        kc_topic = KC_TOPIC
        produce_backlog(args.brokers, kc_n, seed=42, topic=kc_topic)  # the first kc_n events of the backlog
        log(f"catch-up, 1 region, {kc_n}-event backlog (for the KC-style peer)")
        daemon = dict(catchup_one(world, args, "kc-daemon", "bench_kc_daemon", kc_topic, kc_n), source="own run")
        with psycopg.connect(world.dsn(0, "postgres"), autocommit=True) as c:
            c.execute('DROP DATABASE IF EXISTS "bench_kc_daemon"')
    log(f"KC-style peer (emulation of the Kafka Connect JDBC sink, upsert), {kc_n}-event backlog")
    world.create_db(0, "bench_kc")
    world.config("kc", [(0, REGIONS[0], "bench_kc")], free_port())  # migrate: the messages table to copy
    with psycopg.connect(world.dsn(0, "bench_kc"), autocommit=True) as c:
        c.execute("CREATE TABLE kc_messages (LIKE messages INCLUDING ALL)")
        c.execute("CHECKPOINT")
    out = subprocess.run([sys.executable, os.path.join(HERE, "kc_jdbc_sink.py"),
                          "--brokers", args.brokers, "--topic", kc_topic, "--partitions", str(args.partitions),
                          "--dsn", world.dsn(0, "bench_kc"), "--table", "kc_messages", "--batch-size", "3000",
                          "--max-events", str(kc_n), "--tasks", str(args.connections or 2)], check=True, capture_output=True, text=True)
    peer = json.loads(out.stdout.strip().splitlines()[-1])
    with psycopg.connect(world.dsn(0, "bench_kc"), autocommit=True) as c:
        peer["rows_in_table"] = c.execute("SELECT count(*) FROM kc_messages").fetchone()[0]
    with psycopg.connect(world.dsn(0, "postgres"), autocommit=True) as c:
        c.execute('DROP DATABASE IF EXISTS "bench_kc"')
    peer["backlog_events"] = kc_n
    log(f"  {peer}")
    return daemon, peer


def catchup_3(world, args, n):
    """region-replicator draining the backlog into 3 regions (one server each).
    Returns (figures, the daemon's config, the regions' (server, database))."""
    for i in range(3):
        world.create_db(i, "bench_3r")
    http3 = free_port()
    cfg3 = world.config("three", [(i, REGIONS[i], "bench_3r") for i in range(3)], http3)
    dbs3 = [(i, "bench_3r") for i in range(3)]
    log("catch-up, 3 regions")
    d, pid = world.start_daemon(cfg3, "three")
    try:
        per, cpu, span = drain(world, d, pid, dbs3, n, args.timeout)
        rss = peak_rss_mb(pid)
    finally:
        stop(d, pid)
    events = sum(p["events"] for p in per)
    out = {"per_region": dict(zip(REGIONS, per)),
           "total_events_per_s": round(events / span, 1),
           "min_region_events_per_s": min(p["events_per_s"] for p in per),
           "cpu_us_per_event_region": round(cpu / max(events, 1) * 1e6, 2),
           "cpu_s_per_1000_events": round(cpu / max(events, 1) * 1000, 4),
           "peak_rss_mb": round(rss, 1), "rss_before_drain_mb": round(drain.rss_at_start, 1)}
    log(f"  {out}")
    return out, cfg3, dbs3


def ceiling_3(world, buf, rows):
    """The 3-region ceiling: three concurrent COPYs of the same rows, one per region server,
    started together, into an empty copy of the table beside each region's messages."""
    log("ceiling, 3 regions: three concurrent COPYs of the same rows")
    barrier = threading.Barrier(3)

    def copy_on(i):
        try:
            return copy_rows(world.dsn(i, "bench_3r"), buf, "ceiling_messages", barrier)
        except BaseException:
            barrier.abort()  # the other copies wait at the barrier for this one
            raise

    spans = in_parallel(copy_on, [(i,) for i in range(3)])
    wall = max(s[1] for s in spans) - min(s[0] for s in spans)
    out = {"rows_per_region": rows, "seconds": round(wall, 3),
           "rows_per_s": round(3 * rows / wall, 1),
           "per_region_seconds": dict(zip(REGIONS, (round(s[1] - s[0], 3) for s in spans)))}
    log(f"  {out}")
    return out


def reapply_3(world, args, n, cfg3, dbs3):
    """Re-apply: the same range again, onto the regions that hold it."""
    for i, db in dbs3:
        with psycopg.connect(world.dsn(i, db), autocommit=True) as c:
            c.execute("UPDATE replicator_offsets SET next_offset = 0")
    log("re-apply of the same range, 3 regions")
    d, pid = world.start_daemon(cfg3, "three-again")
    try:
        per, cpu, span = drain(world, d, pid, dbs3, n, args.timeout)
        events = sum(p["events"] for p in per)
        out = {"per_region": dict(zip(REGIONS, per)),
               "total_events_per_s": round(events / span, 1),
               "min_region_events_per_s": min(p["events_per_s"] for p in per),
               "cpu_us_per_event_region": round(cpu / max(events, 1) * 1e6, 2)}
        log(f"  {out}")
    finally:
        stop(d, pid)
    return out


def run(args):
    """Every run, in order; returns the figures (the JSON without its targets and table)."""
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    world = World(args)
    n = args.events
    results = {"machine": {"cores": os.cpu_count(), "uptime_load": open("/proc/loadavg").read().split()[:3]},
               "parameters": {"events": n, "steady_rate": args.rate, "steady_seconds": args.steady_seconds,
                              "partitions": args.partitions, "batch_events": args.batch_events,
                              "batch_delay_ms": args.batch_delay_ms, "quick": args.quick, "build": args.build,
                              "verify_rows": args.verify_rows, "connections": args.connections,
                              "kc_events": min(n, KC_EVENTS)},
               "started_at": utc_now_text()}

    produce_backlog(args.brokers, n, seed=42)
    results["catchup_1"] = catchup_1(world, args, n)
    results["ceiling"], rows, buf = ceiling_1(world)
    results["naive"] = naive(world, args, n)
    results["kc_daemon"], results["kc_peer"] = kc(world, args, n, results["catchup_1"])
    results["catchup_3"], cfg3, dbs3 = catchup_3(world, args, n)
    results["ceiling_3"] = ceiling_3(world, buf, rows)
    results["reapply_3"] = reapply_3(world, args, n, cfg3, dbs3)
    # The steady state runs on the 3-region catch-up's tables.
    results.update(steady_runs(world, args, dbs3, n))
    # 3 regions of args.verify_rows identical rows, then 10 scattered differences, beside a
    # naive full download-and-compare of the same tables.
    results["verify"] = verify_phase(world, args)
    log(f"  {results['verify']}")
    results["finished_at"] = utc_now_text()
    return results
