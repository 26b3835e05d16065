"""The capture measurement of the benchmark (`scripts/bench --capture`, for bench.py).

One region (us-east-1, server 1) captures; a second (eu-west-1, server 2) only applies. The
application's INSERTs (no message_id: the trigger derives it; created_at = clock_timestamp())
go into the capturing region while the daemon runs, on librdkafka's mock cluster
(`rr-devtool broker`, as the steady state: Tansu stalls for hundreds of ms at a time):

  live, 1 row/txn   K connections, one row per transaction, as fast as they go
  live, batches     K connections, CAPTURE_BATCH rows per transaction
  latency           a paced writer (1 row/txn, K connections) at 1,000 and 5,000 rows/s; commit
                    in us-east-1 -> row in eu-west-1 (its replicated_at - created_at), p50/p99,
                    beside a bare consumer of the same topic (the broker's produce-to-consume)
  backlog           rows written while the daemon is stopped, then the daemon started: how
                    fast capture drains its slot (its capacity), beside the one-region apply
                    rate of the same run (the catch-up of a Tansu backlog, runs.catchup_1)

Capture figures are read from the daemon's counter
region_replicator_capture_events_total{outcome="published"} (events Kafka acknowledged)."""
import json
import os
import subprocess
import sys
import threading
import time

import psycopg

from measure import histogram, quantile, scrape
from runs import catchup_1
from workload import WORDS, produce_backlog
from world import REGIONS, World, cpu_seconds, free_port, log, perf_report, start_mock, stop, utc_now_text

DRIVER = os.path.join(os.path.dirname(__file__), "bench.py")
CAPTURE_TOPIC = "chat.capture"
CAPTURE_BATCH = 500
CONNECTIONS = 8
INSERT = ("INSERT INTO messages (session_id, role, content, region, created_at) "
          "VALUES (%s, 'user', %s, 'us-east-1', clock_timestamp())")
INSERT_BATCH = ("INSERT INTO messages (session_id, role, content, region, created_at) "
                "SELECT 'sess-' || (random() * 20000)::int, 'assistant', "
                "left(repeat(md5(g::text || random()::text) || ' ', 10), 300), 'us-east-1', clock_timestamp() "
                "FROM generate_series(1, %s) g")


def published(port):
    """The capture counter of events Kafka acknowledged, summed over regions."""
    total = 0.0
    try:
        text = scrape(port)
    except OSError:  # a daemon just started: not listening yet, nothing published
        return 0
    for line in text.splitlines():
        if line.startswith("region_replicator_capture_events_total{") and 'outcome="published"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def content(i):
    return f"{i}: " + " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(45))


def planned(n, batch, connections):
    """The rows write_rows writes for `n`: whole transactions, the same number per connection."""
    return max(n // connections // batch, 1) * batch * connections


def write_rows(dsn, n, batch, connections, rate=None, seconds=None):
    """`n` rows into the capturing region from `connections` connections, `batch` rows per
    transaction; paced at `rate` rows/s for `seconds` when given. Returns (rows, seconds)."""
    counts = [0] * connections
    per_conn = planned(n, batch, connections) // connections if rate is None else None
    start = time.monotonic()

    def writer(k):
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("SET synchronous_commit = on")
            i = 0
            while True:
                if rate is None:
                    if i >= per_conn:
                        break
                else:
                    elapsed = time.monotonic() - start
                    if elapsed >= seconds:
                        break
                    due = (i + 1) * connections / rate
                    if due > elapsed:
                        time.sleep(due - elapsed)
                if batch == 1:
                    c.execute(INSERT, (f"sess-{(k * 7919 + i) % 20000}", content(i)))
                else:
                    c.execute(INSERT_BATCH, (batch,))
                i += batch
            counts[k] = i

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.monotonic() - start


def wait_published(port, target, timeout, proc, on_first=None):
    """Polls the counter until it reaches `target`; returns (first movement, reached) on the
    monotonic clock (first movement: the first poll that saw it above its value at the call,
    when `on_first` is called)."""
    base = published(port)
    first = time.monotonic() if base >= target else None
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        p = published(port)
        if first is None and p > base:
            first = now
            if on_first is not None:
                on_first()
        if p >= target:
            return first or now, now
        if proc.poll() is not None:
            raise RuntimeError(f"the capture daemon exited with status {proc.returncode} (see its log)")
        if now > deadline:
            raise RuntimeError(f"capture published {p} of {target} within {timeout} s")
        time.sleep(0.05)


def live(dsn, port, proc, n, batch):
    """Rows written while the daemon runs; capture events/s from the first write to the last
    acknowledgement, beside the writers' own rate."""
    base = published(port)
    done = {}
    n = planned(n, batch, CONNECTIONS)
    waiter = threading.Thread(target=lambda: done.update(t=wait_published(port, base + n, 600, proc)))
    t0 = time.monotonic()
    waiter.start()
    rows, secs = write_rows(dsn, n, batch, CONNECTIONS)
    t_written = time.monotonic()
    waiter.join()
    if "t" not in done:
        raise RuntimeError("capture did not publish the rows written (see the daemon's log)")
    t_end = done["t"][1]
    return {"rows": rows, "rows_per_transaction": batch, "connections": CONNECTIONS,
            "writer_rows_per_s": round(rows / secs, 1),
            "events_per_s": round(rows / max(t_end - t0, 1e-6), 1),
            "lag_after_last_commit_s": round(max(t_end - t_written, 0.0), 3)}


def bare_consumer(args, mock_brokers, seconds):
    """`bench.py --broker-floor` on the capture topic: record timestamp -> receipt."""
    return subprocess.Popen([sys.executable, DRIVER, "--broker-floor", "--brokers", mock_brokers,
                             "--topic", CAPTURE_TOPIC, "--partitions", str(args.partitions),
                             "--steady-seconds", str(seconds + 5)], stdout=subprocess.PIPE, text=True)


def floor_result(proc):
    out = proc.communicate(timeout=120)[0]
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


def wait_applied(world, timeout=900):
    """Waits until eu-west-1 holds as many rows as us-east-1: the apply side has caught up with
    what the earlier phases captured, so that a latency phase does not measure their backlog."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(world.dsn(0, "bench_cap"), autocommit=True) as a, \
            psycopg.connect(world.dsn(1, "bench_cap"), autocommit=True) as b:
        while True:
            want = a.execute("SELECT count(*) FROM messages").fetchone()[0]
            got = b.execute("SELECT count(*) FROM messages").fetchone()[0]
            if got >= want:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"eu-west-1 holds {got} of us-east-1's {want} rows after {timeout} s")
            time.sleep(0.5)


def latency(world, args, port, dsn_apply, mock_brokers, rate, seconds):
    """A paced writer at `rate` rows/s into the capturing region; commit -> row in the other
    region, from the rows themselves; beside it a bare consumer of the capture topic (capture
    stamps each record with its transaction's commit time: commit -> consume), the daemon's
    capture lag histogram (commit -> Kafka acknowledgement), and then the broker's own floor:
    the steady-state producer (records stamped at send time) at the same rate into the same
    topic, read by a bare consumer (produce -> consume), with the daemon running."""
    name = "region_replicator_capture_lag_seconds"
    m0 = scrape(port)
    floor = bare_consumer(args, mock_brokers, seconds)
    time.sleep(1)  # let it assign before the first record
    t_start = utc_now_text()
    rows, secs = write_rows(world.dsn(0, "bench_cap"), None, 1, CONNECTIONS, rate=rate, seconds=seconds)
    commit_to_consume = floor_result(floor)
    q = "SELECT extract(epoch FROM replicated_at - created_at) * 1000 FROM messages WHERE created_at >= %s"
    deadline = time.monotonic() + 120
    with psycopg.connect(dsn_apply, autocommit=True) as c:
        while True:
            lat = sorted(float(r[0]) for r in c.execute(q, (t_start,)).fetchall())
            if len(lat) >= rows or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    if len(lat) < rows:
        raise RuntimeError(f"only {len(lat)} of {rows} rows reached eu-west-1 within 120 s")
    m1 = scrape(port)

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2)

    floor = bare_consumer(args, mock_brokers, seconds)
    time.sleep(1)
    prod = subprocess.run([sys.executable, DRIVER, "--produce-at-rate", "--brokers", mock_brokers, "--topic", CAPTURE_TOPIC,
                           "--rate", str(rate), "--seed", str(rate), "--steady-seconds", str(seconds)],
                          capture_output=True, text=True)
    if prod.returncode != 0:
        raise RuntimeError(f"the broker-floor producer failed ({prod.returncode}): {prod.stderr[-2000:]}")
    broker_floor = floor_result(floor)
    b0, b1 = histogram(m0, name), histogram(m1, name)
    return {"target_rate": rate, "rows": rows, "achieved_rows_per_s": round(rows / secs, 1),
            "end_to_end_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": round(lat[-1], 2), "count": len(lat)},
            "capture_lag_ms": {"p50": round(1000 * (quantile(b0, b1, 0.5) or 0), 2),
                               "p99": round(1000 * (quantile(b0, b1, 0.99) or 0), 2)},
            "commit_to_consume_ms": commit_to_consume,
            "broker_floor_ms": broker_floor}


def start_capture_daemon(world, cfg, name, port):
    d, pid = world.start_daemon(cfg, name)
    logpath = os.path.join(world.dir, f"daemon-{name}.log")
    deadline = time.monotonic() + 60
    while not (sum(1 for line in open(logpath) if "partitions assigned" in line) >= 2
               and any("capture streaming the slot" in line for line in open(logpath))):
        if time.monotonic() > deadline or d.poll() is not None:
            stop(d, pid)
            raise RuntimeError(f"the capture daemon did not stream its slot and get its partitions within 60 s ({logpath})")
        time.sleep(0.2)
    return d, pid


class SkipLive(Exception):
    """--capture-backlog-only: no live and latency phases."""


def walsender_pid(dsn):
    """The walsender streaming capture's slot (pg_stat_replication), or None."""
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT pid FROM pg_stat_replication WHERE application_name LIKE 'region-replicator capture %' "
                        "AND application_name NOT LIKE '%slot monitor%' LIMIT 1").fetchone()
    return row[0] if row else None


def backlog(world, args, cfg, dsn, port, rows, broker_pid):
    """Rows written while the daemon is stopped, then the daemon started: how fast capture
    drains its slot (its capacity). CPU seconds of the daemon (which also applies the events
    into eu-west-1), of the walsender (Postgres's, not ours) and of the mock cluster's process
    from the first acknowledgement to the last; with --profile the daemon runs under `perf record`, its report (by thread)
    written beside the JSON."""
    log(f"capture, backlog: {rows} rows written with the daemon stopped, then drained")
    w_rows, _ = write_rows(dsn, rows, CAPTURE_BATCH, CONNECTIONS)
    perf_data = os.path.join(world.dir, "perf-capture.data") if args.profile else None
    d, pid = world.start_daemon(cfg, "capture-backlog", perf_data)
    cpu = {}

    def on_first():
        wpid = walsender_pid(dsn)
        cpu["daemon0"], cpu["walsender_pid"] = cpu_seconds(pid), wpid
        cpu["walsender0"] = cpu_seconds(wpid) if wpid else None
        cpu["broker0"] = cpu_seconds(broker_pid)

    try:
        first, end = wait_published(port, w_rows, 600, d, on_first=on_first)  # a new process: its counter starts at 0
        daemon_cpu = cpu_seconds(pid) - cpu.get("daemon0", 0)
        broker_cpu = cpu_seconds(broker_pid) - cpu.get("broker0", 0)
        wpid = cpu.get("walsender_pid")
        walsender_cpu = cpu_seconds(wpid) - cpu["walsender0"] if wpid and cpu.get("walsender0") is not None else None
    finally:
        stop(d, pid)
    if perf_data is not None:
        path = perf_report(perf_data, args.json, ".perf-capture-backlog.txt", sort="comm,dso,symbol", lines=80)
        log(f"  profile of the daemon (perf, cpu-clock) while capture drained its slot: {path}")
    secs = max(end - first, 1e-6)
    return {"rows": w_rows, "seconds": round(end - first, 3), "events_per_s": round(w_rows / secs, 1),
            "daemon_cpu_us_per_event": round(1e6 * daemon_cpu / w_rows, 2),
            "walsender_cpu_us_per_event": round(1e6 * walsender_cpu / w_rows, 2) if walsender_cpu is not None else None,
            "broker_cpu_us_per_event": round(1e6 * broker_cpu / w_rows, 2)}


def capture_run(args):
    """The capture measurement; returns the figures (the JSON without its targets and table)."""
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    world = World(args)
    n = args.events
    rows = args.capture_rows
    rates = [1000] if args.quick else [1000, 5000]
    seconds = min(args.steady_seconds, 5) if args.quick else args.steady_seconds
    results = {"mode": "capture",
               "machine": {"cores": os.cpu_count(), "uptime_load": open("/proc/loadavg").read().split()[:3]},
               "parameters": {"events": n, "capture_rows": rows, "latency_rates": rates, "latency_seconds": seconds,
                              "partitions": args.partitions, "batch_events": args.batch_events,
                              "batch_delay_ms": args.batch_delay_ms, "quick": args.quick, "build": args.build,
                              "connections": args.connections, "writer_connections": CONNECTIONS,
                              "capture_batch_rows": CAPTURE_BATCH},
               "started_at": utc_now_text()}
    produce_backlog(args.brokers, n, seed=42)
    results["catchup_1"] = catchup_1(world, args, n)

    mock, mock_brokers = start_mock(world, CAPTURE_TOPIC, args.partitions, "mock-bootstrap-capture")
    try:
        for i in range(2):
            world.create_db(i, "bench_cap")
        port = free_port()
        cfg = world.config("capture", [(0, REGIONS[0], "bench_cap"), (1, REGIONS[1], "bench_cap")], port,
                           brokers=mock_brokers, topic=CAPTURE_TOPIC, level="info", capture_region=REGIONS[0])
        dsn = world.dsn(0, "bench_cap")
        d, pid = start_capture_daemon(world, cfg, "capture", port) if not args.capture_backlog_only else (None, None)
        try:
            if args.capture_backlog_only:
                raise SkipLive
            log(f"capture, live: {rows // 5} rows, 1 row per transaction, {CONNECTIONS} connections")
            results["capture_live_single"] = live(dsn, port, d, rows // 5, 1)
            log(f"  {results['capture_live_single']}")
            log(f"capture, live: {rows} rows, {CAPTURE_BATCH} rows per transaction, {CONNECTIONS} connections")
            results["capture_live_batches"] = live(dsn, port, d, rows, CAPTURE_BATCH)
            log(f"  {results['capture_live_batches']}")
            results["capture_latency"] = []
            for rate in rates:
                t_wait = time.monotonic()
                wait_applied(world)
                log(f"  eu-west-1 caught up with the earlier phases in {time.monotonic() - t_wait:.1f} s")
                log(f"capture, end-to-end latency: {rate} rows/s for {seconds} s, us-east-1 -> eu-west-1")
                results["capture_latency"].append(latency(world, args, port, world.dsn(1, "bench_cap"),
                                                          mock_brokers, rate, seconds))
                log(f"  {results['capture_latency'][-1]}")
        except SkipLive:
            pass
        finally:
            if d is not None:
                stop(d, pid)
        results["capture_backlog"] = backlog(world, args, cfg, dsn, port, rows, mock.pid)
        log(f"  {results['capture_backlog']}")
    finally:
        stop(mock)
    results["finished_at"] = utc_now_text()
    return results


def capture_targets(r, target):
    """Capture's targets: its capacity (the slot drained from a backlog) at least the one-region
    apply rate; end-to-end p99 at most twice the broker's produce-to-consume p99 plus one apply
    batch delay, at each rate."""
    apply_rate = r["catchup_1"]["events_per_s"]
    t = {"capture_vs_apply_1": target("capture (slot backlog) vs 1-region apply", r["capture_backlog"]["events_per_s"] /
                                      apply_rate if apply_rate else None, 1.0, "× 1-region apply", True)}
    delay = r["parameters"]["batch_delay_ms"]
    for lat in r.get("capture_latency", []):
        floor = lat["broker_floor_ms"].get("p99")
        goal = 2 * floor + delay if floor is not None else 0.0
        t[f"capture_p99_ms_{lat['target_rate']}"] = target(
            f"capture end-to-end {lat['target_rate']:,} rows/s, p99", lat["end_to_end_ms"]["p99"], round(goal, 2), "ms",
            False, broker_floor_p99_ms=floor, batch_delay_ms=delay, rate=lat["target_rate"],
            target_rate=lat["target_rate"])
    return t


def capture_table(r):
    c1, bl = r["catchup_1"], r["capture_backlog"]
    lines = [
        f"region-replicator capture benchmark — {r['parameters']['capture_rows']} rows, "
        f"{r['parameters']['partitions']} partitions, {r['machine']['cores']} cores, "
        f"load {' '.join(r['machine']['uptime_load'])}", "",
        f"{'measure':52} {'value':>12}",
        f"{'catch-up, 1 region, apply (ev/s)':52} {c1['events_per_s']:12,.0f}",
        f"{'capture, slot backlog drained (ev/s)':52} {bl['events_per_s']:12,.0f}   "
        f"{bl['events_per_s'] / max(c1['events_per_s'], 1e-9):.2f} × 1-region apply",
        f"{'  CPU µs/event: daemon (capture + apply) / walsender / broker':52} {bl.get('daemon_cpu_us_per_event') or 0:6.1f} /"
        f"{bl.get('walsender_cpu_us_per_event') or 0:6.1f} /{bl.get('broker_cpu_us_per_event') or 0:6.1f}",
    ]
    for key, label in (("capture_live_single", "1 row/txn"), ("capture_live_batches", f"{CAPTURE_BATCH} rows/txn")):
        if key not in r:
            continue
        x = r[key]
        lines.append(f"{'capture, live, ' + label + ', ' + str(x['connections']) + ' conns (ev/s)':52} "
                     f"{x['events_per_s']:12,.0f}   writers {x['writer_rows_per_s']:,.0f} rows/s, "
                     f"lag after last commit {x['lag_after_last_commit_s']:.2f} s")
    for lat in r.get("capture_latency", []):
        e, f, cc, cl = lat["end_to_end_ms"], lat["broker_floor_ms"], lat["commit_to_consume_ms"], lat["capture_lag_ms"]
        lines += [f"{'end-to-end ' + format(lat['target_rate'], ',') + ' rows/s: p50/p99/max (ms)':52} "
                  f"{e['p50']:6.1f} /{e['p99']:6.1f} /{e['max']:7.1f}   achieved {lat['achieved_rows_per_s']:,.0f} rows/s",
                  f"{'  p50/p99: commit → Kafka ack (capture lag histogram)':52} {cl['p50']:6.1f} /{cl['p99']:6.1f}",
                  f"{'  p50/p99: commit → bare consumer':52} {cc.get('p50') or 0:6.1f} /{cc.get('p99') or 0:6.1f}",
                  f"{'  p50/p99: broker floor, produce → consume':52} {f.get('p50') or 0:6.1f} /{f.get('p99') or 0:6.1f}"]
    return lines
