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
"""
import argparse
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import psycopg
from confluent_kafka import Producer

TOPIC = "chat.messages"
KC_TOPIC = "chat.kc"  # the KC-style peer's backlog when the main one is larger than KC_EVENTS
KC_EVENTS = 200_000
STEADY_TOPIC = "chat.steady"
ORIGIN = "sa-east-1"  # not a target region: every backlog event applies in every region
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Workload

WORDS = ("the quick brown fox jumps over a lazy dog while agents answer questions about "
         "regions replication latency tokens context window tool call result summary").split()


def make_event(rng, i, created_at):
    session = f"sess-{rng.randrange(20000)}"
    content = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(30, 80)))
    return session, {
        "type": "message.upserted", "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "message_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "session_id": session,
        "role": ("user", "assistant")[i % 2], "content": f"{i}: {content}", "origin_region": ORIGIN,
        "created_at": created_at, "version": 1,
    }


def utc_now_text():
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def produce_backlog(brokers, n, seed, topic=TOPIC):
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 200000, "compression.type": "none", "log_level": 3})
    rng = random.Random(seed)
    base = dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc)
    t0 = time.monotonic()
    for i in range(n):
        created = (base + dt.timedelta(microseconds=i * 1000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        key, ev = make_event(rng, i, created)
        while True:
            try:
                p.produce(topic, key=key, value=json.dumps(ev, separators=(",", ":")))
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(120)
    log(f"produced a backlog of {n} events into {topic} in {time.monotonic() - t0:.1f} s")


def produce_at_rate(brokers, topic, rate, seconds, seed):
    """Runs in a child process: a paced producer that stamps created_at at send time."""
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 5, "log_level": 3})
    rng = random.Random(seed)
    tick = 0.005
    per_tick = rate * tick
    start = time.monotonic()
    sent = 0
    i = 10_000_000
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        due = int((now - start) / tick * per_tick) + 1
        while sent < due:
            key, ev = make_event(rng, i, utc_now_text())
            while True:
                try:
                    p.produce(topic, key=key, value=json.dumps(ev, separators=(",", ":")))
                    break
                except BufferError:
                    p.poll(0.01)
            sent += 1
            i += 1
        p.poll(0)
        time.sleep(max(0.0, start + (sent / rate) - time.monotonic()))
    p.flush(60)
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - start, 3)}), flush=True)


def broker_floor(brokers, topic, partitions, seconds):
    """Runs in a child process: a bare consumer (no database) that measures Kafka record
    timestamp -> receipt for the records produced while it runs: what the broker alone adds."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-floor", "fetch.wait.max.ms": "10",
                  "enable.auto.commit": False, "log_level": 3})
    c.assign([TopicPartition(topic, p, OFFSET_END) for p in range(partitions)])
    lat = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        m = c.poll(0.1)  # per record: consume(n, t) would wait for n records or t
        if m is not None and not m.error():
            lat.append(time.time() * 1000 - m.timestamp()[1])
    c.close()
    lat.sort()
    pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)) if lat else (lambda q: None)
    print(json.dumps({"count": len(lat), "p50": pick(0.5), "p99": pick(0.99), "max": round(lat[-1], 2) if lat else None}))


# ---------------------------------------------------------------------------------------------
# World

class World:
    def __init__(self, args):
        self.args = args
        self.ports = [int(p) for p in args.pg_ports.split(",")]
        self.bin = args.bin_dir
        self.dir = args.work_dir

    def dsn(self, i, db):
        return f"host=127.0.0.1 port={self.ports[i]} dbname={db} user=postgres"

    def create_db(self, i, db):
        with psycopg.connect(self.dsn(i, "postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}"')
            c.execute(f'CREATE DATABASE "{db}"')

    def config(self, name, regions, http_port, brokers=None, topic=TOPIC, level="notice"):
        path = os.path.join(self.dir, f"{name}.yaml")
        lines = [
            "kafka:", f'  brokers: "{brokers or self.args.brokers}"', f"  topic: {topic}", f"  group_prefix: bench-{name}",
            "  properties:",
            # Tansu takes ~23 s to complete a group join with the default 45 s session timeout.
            '    session.timeout.ms: "6000"', '    heartbeat.interval.ms: "500"', '    log_level: "4"',
            # Tansu answers a fetch only when fetch.wait.max.ms (default 500) has passed, even when
            # records are there (Kafka answers at once when fetch.min.bytes is reached): without
            # this, Tansu alone would add ~250 ms on average to every record's latency.
            '    fetch.wait.max.ms: "10"',
        ]
        # Experiments: extra librdkafka properties, "key=value,key=value".
        for kv in filter(None, os.environ.get("BENCH_KAFKA_PROPERTIES", "").split(",")):
            k, v = kv.split("=", 1)
            lines.append(f'    {k}: "{v}"')
        lines.append("regions:")
        for (i, region, db) in regions:
            lines += [f"  - name: {region}", f'    dsn: "{self.dsn(i, db)}"']
        lines += ["apply:", f"  max_batch_events: {self.args.batch_events}", f"  max_batch_delay_ms: {self.args.batch_delay_ms}"]
        if self.args.connections is not None:
            lines.append(f"  connections: {self.args.connections}")
        lines += ["http:", f'  listen: "127.0.0.1:{http_port}"', "log:", f"  level: {level}"]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        subprocess.run([os.path.join(self.bin, "region-replicator"), "migrate", "--config", path],
                       check=True, stdout=subprocess.DEVNULL)
        return path

    def start_daemon(self, config, name, perf_data=None):
        """Starts `region-replicator run`; under `perf record` when `perf_data` is given.
        Returns (process to stop, daemon pid)."""
        logf = open(os.path.join(self.dir, f"daemon-{name}.log"), "w")
        cmd = [os.path.join(self.bin, "region-replicator"), "run", "--config", config]
        if perf_data is None:
            p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
            return p, p.pid
        p = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "997", "-g", "-o", perf_data, "--"] + cmd,
                             stdout=logf, stderr=subprocess.STDOUT)
        for _ in range(100):
            kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
            if kids:
                return p, int(kids[0])
            time.sleep(0.05)
        raise RuntimeError("perf did not start the daemon")


def stop(proc, pid=None, seconds=30):
    if proc.poll() is None:
        os.kill(pid or proc.pid, signal.SIGTERM)
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def peak_rss_mb(pid, field="VmHWM:"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def offsets_sum(conn):
    return int(conn.execute("SELECT coalesce(sum(next_offset), 0) FROM replicator_offsets").fetchone()[0])


def in_parallel(fn, arg_tuples):
    """Runs fn(*args) for every tuple at once, one thread each; returns the results in order
    and re-raises the first failure in the calling thread."""
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(arg_tuples)) as pool:
        futures = [pool.submit(fn, *args) for args in arg_tuples]
    return [f.result() for f in futures]


def drain(world, proc, pid, dbs, target, timeout):
    """Polls each region's stored offsets until each reaches `target`.

    Returns per-region (start, end, events counted) and the daemon's CPU seconds between the
    first movement and the end."""
    conns = [psycopg.connect(world.dsn(i, db), autocommit=True) for (i, db) in dbs]
    base = [offsets_sum(c) for c in conns]
    starts = [None] * len(conns)
    ends = [None] * len(conns)
    at_start = [0] * len(conns)
    cpu0 = None
    deadline = time.monotonic() + timeout
    while None in ends:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with status {proc.returncode} (see its log)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not drained within {timeout} s: {[offsets_sum(c) for c in conns]} of {target}")
        now = time.monotonic()
        for k, c in enumerate(conns):
            if ends[k] is not None:
                continue
            s = offsets_sum(c)
            if starts[k] is None and s != base[k]:
                starts[k], at_start[k] = now, s
                if cpu0 is None:
                    cpu0 = cpu_seconds(pid)
                    drain.rss_at_start = peak_rss_mb(pid, "VmRSS:")
            if s >= target:
                ends[k] = now
                if starts[k] is None:  # drained between two samples
                    starts[k], at_start[k] = now, base[k]
        time.sleep(0.05)
    cpu = cpu_seconds(pid) - (cpu0 or 0)
    for c in conns:
        c.close()
    out = []
    for k in range(len(conns)):
        events = target - at_start[k]
        seconds = max(ends[k] - starts[k], 1e-6)
        out.append({"events": events, "seconds": round(seconds, 3), "events_per_s": round(events / seconds, 1)})
    span = max(ends) - min(starts)
    return out, cpu, span


drain.rss_at_start = 0.0  # VmRSS when the offsets first moved, of the last drain


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def histogram(text, name):
    """Cumulative buckets summed over regions: {le: count}, plus count."""
    buckets = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            labels, value = line.rsplit(" ", 1)
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            le = float("inf") if le == "+Inf" else float(le)
            buckets[le] = buckets.get(le, 0) + float(value)
    return buckets


def metric_sum(text, name):
    """The sum of one metric's samples over all label sets."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def mean_batch_events(text):
    """Events per apply transaction, from the daemon's own counters (all regions)."""
    batches = metric_sum(text, "region_replicator_batch_duration_seconds_count")
    return round(metric_sum(text, "region_replicator_events_total") / batches, 1) if batches else None


def quantile(before, after, q):
    les = sorted(after)
    cum = [(le, after[le] - before.get(le, 0)) for le in les]
    total = cum[-1][1] if cum else 0
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in cum:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / max(c - prev_c, 1e-9))
        prev_le, prev_c = le, c
    return prev_le


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# The phases

def steady_phase(world, args, d, pid, http_s, dbs3, mock_brokers, applied, verify_config=None, seed=7):
    """One steady-state measurement on the running steady daemon. With `verify_config`,
    `region-replicator verify` runs in a loop meanwhile. Returns (figures, events sent)."""
    import threading
    m0 = scrape(http_s)
    cpu0 = cpu_seconds(pid)
    t_start = utc_now_text()
    verifies = {"runs": 0, "seconds": [], "exit_codes": []}
    stop_verify = threading.Event()

    def verify_loop():
        while not stop_verify.is_set():
            t0 = time.monotonic()
            r = subprocess.run([os.path.join(world.bin, "region-replicator"), "verify", "--config", verify_config, "--json"],
                               capture_output=True, text=True)
            verifies["runs"] += 1
            verifies["seconds"].append(round(time.monotonic() - t0, 3))
            verifies["exit_codes"].append(r.returncode)

    verifier = threading.Thread(target=verify_loop) if verify_config else None
    floor = subprocess.Popen([sys.executable, __file__, "--broker-floor", "--brokers", mock_brokers,
                              "--topic", STEADY_TOPIC, "--partitions", str(args.partitions),
                              "--steady-seconds", str(args.steady_seconds + 5)],
                             stdout=subprocess.PIPE, text=True)
    time.sleep(1)  # let it assign before the first record
    if verifier:
        verifier.start()
    try:
        prod = subprocess.run([sys.executable, __file__, "--produce-at-rate", "--brokers", mock_brokers,
                               "--topic", STEADY_TOPIC, "--rate", str(args.rate), "--seed", str(seed),
                               "--steady-seconds", str(args.steady_seconds)], capture_output=True, text=True)
    finally:
        stop_verify.set()
        if verifier:
            verifier.join()
    if prod.returncode != 0:
        raise RuntimeError(f"the steady-state producer failed ({prod.returncode}): {prod.stderr[-2000:]}")
    sent = json.loads(prod.stdout.strip().splitlines()[-1])
    floor_out = floor.communicate(timeout=120)[0]
    floor_ms = json.loads(floor_out.strip().splitlines()[-1]) if floor_out.strip() else {}
    drain(world, d, pid, dbs3, applied + sent["sent"], 120)
    cpu = cpu_seconds(pid) - cpu0
    m1 = scrape(http_s)
    rss_steady = peak_rss_mb(pid)
    name = "region_replicator_apply_latency_seconds"
    b0, b1 = histogram(m0, name), histogram(m1, name)
    indep = []
    for i, db in dbs3:
        with psycopg.connect(world.dsn(i, db), autocommit=True) as c:
            indep += [float(r[0]) for r in c.execute(
                "SELECT extract(epoch FROM replicated_at - created_at) * 1000 FROM messages WHERE created_at >= %s",
                (t_start,)).fetchall()]
    indep.sort()

    def pct(q):
        return round(indep[min(len(indep) - 1, int(q * len(indep)))], 2) if indep else None

    out = {
        "rate": args.rate, "sent": sent["sent"], "producer_seconds": sent["seconds"],
        "daemon_histogram_ms": {"p50": round(1000 * (quantile(b0, b1, 0.5) or 0), 2),
                                "p99": round(1000 * (quantile(b0, b1, 0.99) or 0), 2),
                                "count": round(b1.get(float("inf"), 0) - b0.get(float("inf"), 0))},
        "stamped_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": round(indep[-1], 2) if indep else None,
                       "count": len(indep)},
        # One apply transaction (all regions): where a latency tail comes from the database.
        "batch_duration_ms": {
            "p50": round(1000 * (quantile(histogram(m0, "region_replicator_batch_duration_seconds"),
                                          histogram(m1, "region_replicator_batch_duration_seconds"), 0.5) or 0), 2),
            "p99": round(1000 * (quantile(histogram(m0, "region_replicator_batch_duration_seconds"),
                                          histogram(m1, "region_replicator_batch_duration_seconds"), 0.99) or 0), 2)},
        # The same records seen by a bare consumer without any database: the broker's own share.
        "broker_floor_ms": floor_ms,
        "cpu_us_per_event_region": round(cpu / max(3 * sent["sent"], 1) * 1e6, 2),
        "cpu_percent_of_one_core": round(100 * cpu / max(sent["seconds"], 1e-6), 1),
        "peak_rss_mb": round(rss_steady, 1),
    }
    if verify_config:
        out["verify_runs"] = verifies["runs"]
        out["verify_seconds"] = verifies["seconds"]
        out["verify_exit_codes"] = verifies["exit_codes"]
    return out, sent["sent"]


VERIFY_FILL = """
INSERT INTO messages (message_id, session_id, role, content, region, created_at, version)
SELECT md5('m' || i)::uuid, 'sess-' || (i % 20000), CASE WHEN i % 2 = 0 THEN 'user' ELSE 'assistant' END,
       i || ': ' || repeat(md5(i::text), 6), 'sa-east-1', timestamptz '2026-11-24 00:00:00+00' + i * interval '1 ms',
       1 + (i % 7 = 0)::int
FROM generate_series(1, {n}) i;
INSERT INTO replicator_message_tombstones (message_id, session_id, version, deleted_at)
SELECT md5('t' || i)::uuid, 'sess-' || (i % 20000), 2, timestamptz '2026-11-25 00:00:00+00' + i * interval '1 ms'
FROM generate_series(1, {n} / 100) i;
INSERT INTO replicator_session_tombstones (session_id, deleted_at)
SELECT 'erased-' || i, timestamptz '2026-11-25 00:00:00+00' + i * interval '1 s' FROM generate_series(1, {n} / 1000) i;
"""


def naive_compare(world, dbs):
    """Downloads every row and tombstone of every region and compares them in Python."""
    t0 = time.monotonic()
    states = []
    for i, db in dbs:
        with psycopg.connect(world.dsn(i, db), autocommit=True) as c:
            rows = {r[0]: r[1:] for r in c.execute(
                "SELECT message_id, session_id, role, content, region, created_at, version FROM messages")}
            tombs = {r[0]: r[1] for r in c.execute("SELECT message_id, version FROM replicator_message_tombstones")}
            sessions = {r[0]: r[1] for r in c.execute("SELECT session_id, deleted_at FROM replicator_session_tombstones")}
        states.append((rows, tombs, sessions))
    differing = 0
    for part in range(3):
        keys = set().union(*(s[part].keys() for s in states))
        for k in keys:
            vals = [s[part].get(k) for s in states]
            if any(v != vals[0] for v in vals):
                differing += 1
    return time.monotonic() - t0, differing


def verify_phase(world, args):
    n = args.verify_rows
    dbs = [(i, "bench_verify") for i in range(3)]
    for i, db in dbs:
        world.create_db(i, db)
    cfg = world.config("verify", [(i, REGIONS[i], db) for i, db in dbs], free_port())
    log(f"verify: filling 3 regions with {n} identical rows (+ {n // 100} message and {n // 1000} session tombstones)")

    def fill(i, db):
        with psycopg.connect(world.dsn(i, db), autocommit=True) as c:
            c.execute(VERIFY_FILL.replace("{n}", str(n)))
            c.execute("VACUUM ANALYZE")
            c.execute("CHECKPOINT")

    in_parallel(fill, dbs)
    with psycopg.connect(world.dsn(*dbs[0]), autocommit=True) as c:
        if c.execute("SELECT count(*) FROM messages").fetchone()[0] != n:
            raise RuntimeError("the verify phase's regions were not filled")

    def verify():
        t0 = time.monotonic()
        # The regions were filled in SQL, not by a daemon: nothing is in flight, and no region's
        # stored offsets will ever reach the topic's watermarks, so candidates are re-checked at once.
        r = subprocess.run([os.path.join(world.bin, "region-replicator"), "verify", "--config", cfg, "--json",
                            "--settle-timeout", "0"], capture_output=True, text=True)
        wall = time.monotonic() - t0
        if r.returncode not in (0, 2):
            raise RuntimeError(f"verify failed ({r.returncode}): {r.stderr[-2000:]}")
        return wall, r.returncode, json.loads(r.stdout)

    # Warm each server's cache the same way for both contenders: one untimed verify first.
    verify()
    clean_s, clean_rc, clean = verify()
    naive_clean_s, naive_clean_diff = naive_compare(world, dbs)
    log(f"  0 differences: verify {clean_s:.2f} s (exit {clean_rc}), naive {naive_clean_s:.2f} s ({naive_clean_diff} differing)")
    # 10 scattered differences over two regions: missing rows, older versions, extra rows, a
    # resurrected row and a lost tombstone.
    plant = [
        (1, "DELETE FROM messages WHERE message_id = md5('m' || %(a)s)::uuid"),
        (2, "DELETE FROM messages WHERE message_id = md5('m' || %(b)s)::uuid"),
        (1, "UPDATE messages SET version = 0 WHERE message_id = md5('m' || %(c)s)::uuid"),
        (2, "UPDATE messages SET content = 'edited by hand' WHERE message_id = md5('m' || %(d)s)::uuid"),
        (1, "INSERT INTO messages (message_id, session_id, role, content, region, created_at, version) "
            "VALUES (md5('x' || %(e)s)::uuid, 'only-here', 'user', 'x', 'sa-east-1', now(), 1)"),
        (2, "INSERT INTO messages (message_id, session_id, role, content, region, created_at, version) "
            "VALUES (md5('t' || %(f)s)::uuid, 'sess-1', 'user', 'back', 'sa-east-1', now(), 1)"),
        (1, "DELETE FROM replicator_message_tombstones WHERE message_id = md5('t' || %(g)s)::uuid"),
        (2, "DELETE FROM messages WHERE message_id = md5('m' || %(h)s)::uuid"),
        (1, "UPDATE messages SET version = 0 WHERE message_id = md5('m' || %(i)s)::uuid"),
        (2, "DELETE FROM replicator_session_tombstones WHERE session_id = 'erased-' || %(j)s"),
    ]
    # Spread over the key space (md5 ids): distinct rows, tombstones and sessions.
    picks = {k: (idx + 1) * (n // 8) - 7 * idx for idx, k in enumerate("abcdehi")}
    picks["f"], picks["g"] = n // 300, n // 150
    picks["j"] = max(1, n // 2000)
    for region, sql in plant:
        with psycopg.connect(world.dsn(*dbs[region]), autocommit=True) as c:
            c.execute(sql % picks)
    diff_s, diff_rc, diff = verify()
    naive_diff_s, naive_diff = naive_compare(world, dbs)
    log(f"  10 differences: verify {diff_s:.2f} s (exit {diff_rc}, {len(diff['divergences'])} divergences), "
        f"naive {naive_diff_s:.2f} s ({naive_diff} differing)")
    out = {
        "rows_per_region": n, "regions": 3,
        "seconds_clean": round(clean_s, 3), "exit_clean": clean_rc, "segments_clean": clean["segments_compared"],
        "seconds_10_diffs": round(diff_s, 3), "exit_10_diffs": diff_rc,
        "divergences_reported": len(diff["divergences"]), "items_fetched_10_diffs": diff["items_fetched"],
        "naive_seconds_clean": round(naive_clean_s, 3), "naive_seconds_10_diffs": round(naive_diff_s, 3),
        "naive_differing_10_diffs": naive_diff,
        "speedup_clean": round(naive_clean_s / max(clean_s, 1e-6), 2),
        "speedup_10_diffs": round(naive_diff_s / max(diff_s, 1e-6), 2),
    }
    for i, db in dbs:
        with psycopg.connect(world.dsn(i, "postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}"')
    return out


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


def run(args):
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

    # -- catch-up, 1 region (server 1, its own database)
    log("catch-up, 1 region")
    perf_data = os.path.join(world.dir, "perf-1r.data") if args.profile else None
    results["catchup_1"] = catchup_one(world, args, "one", "bench_1r", TOPIC, n, perf_data)
    if perf_data is not None:
        report = subprocess.run(f"perf report -i {perf_data} --no-children --sort dso,symbol --stdio -g none "
                                f"2>/dev/null | swift demangle --simplified | grep -v '^#' | grep -v '^$' | head -60",
                                shell=True, capture_output=True, text=True).stdout
        path = os.path.splitext(args.json)[0] + ".perf-catchup-1r.txt"
        with open(path, "w") as f:
            f.write(report)
        log(f"  profile of the daemon (perf, cpu-clock) while draining: {path}")
    log(f"  {results['catchup_1']}")

    # -- the ceiling: COPY of the same rows into an empty copy of the table, same database
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
    results["ceiling"] = {"rows": rows, "seconds": round(secs, 3), "rows_per_s": round(rows / secs, 1)}
    log(f"  {results['ceiling']}")

    # -- the naive replicator (the article's way), same server, its own database
    log("naive replicator (the article's one INSERT per event)")
    world.create_db(0, "bench_naive")
    world.config("naive", [(0, REGIONS[0], "bench_naive")], free_port())  # migrate: the same tables
    out = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "naive_replicator.py"),
                          "--brokers", args.brokers, "--topic", TOPIC, "--partitions", str(args.partitions),
                          "--dsn", world.dsn(0, "bench_naive"), "--seconds", str(args.naive_seconds),
                          "--max-events", str(n)], check=True, capture_output=True, text=True)
    results["naive"] = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"  {results['naive']}")

    # -- the KC-style peer (an emulation of Kafka Connect's JDBC sink, upsert mode), same server,
    # its own database, on a backlog of at most KC_EVENTS events; the daemon on the same backlog.
    kc_n = min(n, KC_EVENTS)
    if kc_n == n:
        kc_topic, results["kc_daemon"] = TOPIC, dict(results["catchup_1"], source="catchup_1")
    else:
        kc_topic = KC_TOPIC
        produce_backlog(args.brokers, kc_n, seed=42, topic=kc_topic)  # the first kc_n events of the backlog
        log(f"catch-up, 1 region, {kc_n}-event backlog (for the KC-style peer)")
        results["kc_daemon"] = dict(catchup_one(world, args, "kc-daemon", "bench_kc_daemon", kc_topic, kc_n),
                                    source="own run")
        with psycopg.connect(world.dsn(0, "postgres"), autocommit=True) as c:
            c.execute('DROP DATABASE IF EXISTS "bench_kc_daemon"')
    log(f"KC-style peer (emulation of the Kafka Connect JDBC sink, upsert), {kc_n}-event backlog")
    world.create_db(0, "bench_kc")
    world.config("kc", [(0, REGIONS[0], "bench_kc")], free_port())  # migrate: the messages table to copy
    with psycopg.connect(world.dsn(0, "bench_kc"), autocommit=True) as c:
        c.execute("CREATE TABLE kc_messages (LIKE messages INCLUDING ALL)")
        c.execute("CHECKPOINT")
    out = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "kc_jdbc_sink.py"),
                          "--brokers", args.brokers, "--topic", kc_topic, "--partitions", str(args.partitions),
                          "--dsn", world.dsn(0, "bench_kc"), "--table", "kc_messages", "--batch-size", "3000",
                          "--max-events", str(kc_n)], check=True, capture_output=True, text=True)
    results["kc_peer"] = json.loads(out.stdout.strip().splitlines()[-1])
    with psycopg.connect(world.dsn(0, "bench_kc"), autocommit=True) as c:
        results["kc_peer"]["rows_in_table"] = c.execute("SELECT count(*) FROM kc_messages").fetchone()[0]
    with psycopg.connect(world.dsn(0, "postgres"), autocommit=True) as c:
        c.execute('DROP DATABASE IF EXISTS "bench_kc"')
    results["kc_peer"]["backlog_events"] = kc_n
    log(f"  {results['kc_peer']}")

    # -- catch-up, 3 regions (one server each)
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
    results["catchup_3"] = {"per_region": dict(zip(REGIONS, per)),
                            "total_events_per_s": round(events / span, 1),
                            "min_region_events_per_s": min(p["events_per_s"] for p in per),
                            "cpu_us_per_event_region": round(cpu / max(events, 1) * 1e6, 2),
                            "cpu_s_per_1000_events": round(cpu / max(events, 1) * 1000, 4),
                            "peak_rss_mb": round(rss, 1), "rss_before_drain_mb": round(drain.rss_at_start, 1)}
    log(f"  {results['catchup_3']}")

    # -- the 3-region ceiling: three concurrent COPYs of the same rows, one per region server,
    # started together, into an empty copy of the table beside each region's messages.
    import threading
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
    results["ceiling_3"] = {"rows_per_region": rows, "seconds": round(wall, 3),
                            "rows_per_s": round(3 * rows / wall, 1),
                            "per_region_seconds": dict(zip(REGIONS, (round(s[1] - s[0], 3) for s in spans)))}
    log(f"  {results['ceiling_3']}")

    # -- re-apply: the same range again, onto the regions that hold it
    for i, db in dbs3:
        with psycopg.connect(world.dsn(i, db), autocommit=True) as c:
            c.execute("UPDATE replicator_offsets SET next_offset = 0")
    log("re-apply of the same range, 3 regions")
    d, pid = world.start_daemon(cfg3, "three-again")
    try:
        per, cpu, span = drain(world, d, pid, dbs3, n, args.timeout)
        events = sum(p["events"] for p in per)
        results["reapply_3"] = {"per_region": dict(zip(REGIONS, per)),
                                "total_events_per_s": round(events / span, 1),
                                "min_region_events_per_s": min(p["events_per_s"] for p in per),
                                "cpu_us_per_event_region": round(cpu / max(events, 1) * 1e6, 2)}
        log(f"  {results['reapply_3']}")
    finally:
        stop(d, pid)

    # -- steady state: a paced producer, into the same three regions (their 500k-row tables).
    # On librdkafka's mock cluster (`rr-devtool broker`), not Tansu: measured here with bare
    # consumers, Tansu delivers records with p50 ~400 ms / p99 ~2 s at this rate (it stalls),
    # the mock cluster with p50 ~9 ms / p99 ~19 ms. The broker's own share is measured below.
    # Settle first: the backlog phases left autovacuum/analyze work and dirty WAL behind; a
    # steady state measured during that aftermath would show the catch-up's checkpoint, not
    # the daemon's latency.
    for i, db in dbs3:
        with psycopg.connect(world.dsn(i, db), autocommit=True) as c:
            c.execute("VACUUM ANALYZE")
            c.execute("CHECKPOINT")
    mock = subprocess.Popen([os.path.join(world.bin, "rr-devtool"), "broker", "--brokers", "1", "--topic", STEADY_TOPIC,
                             "--partitions", str(args.partitions), "--bootstrap-file", os.path.join(world.dir, "mock-bootstrap")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            if os.path.exists(os.path.join(world.dir, "mock-bootstrap")):
                break
            time.sleep(0.1)
        mock_brokers = open(os.path.join(world.dir, "mock-bootstrap")).read().strip()
        http_s = free_port()
        cfg_s = world.config("steady", [(i, REGIONS[i], "bench_3r") for i in range(3)], http_s,
                             brokers=mock_brokers, topic=STEADY_TOPIC, level="info")
        d, pid = world.start_daemon(cfg_s, "steady")
        try:
            logpath = os.path.join(world.dir, "daemon-steady.log")
            deadline = time.monotonic() + 60
            while sum(1 for line in open(logpath) if "partitions assigned" in line) < 3:
                if time.monotonic() > deadline or d.poll() is not None:
                    raise RuntimeError("the steady-state daemon did not get its partitions within 60 s")
                time.sleep(0.2)
            time.sleep(1)
            applied = n
            # The same steady state twice: alone, then with `region-replicator verify` running in
            # a loop against the same three regions (what an operator's verify costs the applier).
            for key, with_verify in (("steady_3", False), ("steady_3_verify", True)):
                log(f"steady state{' with verify running' if with_verify else ''}: {args.rate} events/s for "
                    f"{args.steady_seconds} s, 3 regions (mock cluster {mock_brokers})")
                results[key], sent = steady_phase(world, args, d, pid, http_s, dbs3, mock_brokers, applied,
                                                  verify_config=cfg_s if with_verify else None,
                                                  seed=8 if with_verify else 7)  # new message ids
                applied += sent
                log(f"  {results[key]}")
        finally:
            stop(d, pid)
    finally:
        stop(mock)

    # -- verify: 3 regions of args.verify_rows identical rows, then 10 scattered differences,
    # beside a naive full download-and-compare of the same tables.
    results["verify"] = verify_phase(world, args)
    log(f"  {results['verify']}")
    results["finished_at"] = utc_now_text()
    return results


def target(label, value, goal, unit, at_least, **extra):
    value = None if value is None else round(value, 3)
    return dict({"figure": label, "value": value, "target": goal, "unit": unit, "comparison": "≥" if at_least else "≤",
                 "met": value is not None and (value >= goal if at_least else value <= goal)}, **extra)


def targets(r):
    """The figures the project's performance targets are set on, each beside its target, and the
    two criteria the work on them is judged by. Ratios are to ceilings measured in the same run;
    latency, CPU and memory are absolute."""
    ceil, ceil3 = r["ceiling"]["rows_per_s"], r["ceiling_3"]["rows_per_s"]
    c1, c3, st = r["catchup_1"], r["catchup_3"], r["steady_3"]
    kc, kcd = r["kc_peer"], r["kc_daemon"]
    vs_copy = c1["events_per_s"] / ceil if ceil else None
    vs_kc = kcd["events_per_s"] / kc["events_per_s"] if kc["events_per_s"] else None
    n = r["parameters"]["events"]
    t = {
        "catchup_1_vs_copy": target("catch-up, 1 region", vs_copy, 0.8, "× COPY", True),
        "catchup_3_vs_three_copies": target("catch-up, 3 regions, total", c3["total_events_per_s"] / ceil3 if ceil3 else None,
                                            0.8, "× three concurrent COPYs", True),
        "catchup_vs_kc_peer": target("catch-up vs KC-style peer", vs_kc, 2.0, "× KC-style peer", True,
                                     backlog_events=kc["backlog_events"]),
        "steady_p99_ms": target(f"steady {st['rate']:,} ev/s → 3 regions, p99 (histogram)",
                                st["daemon_histogram_ms"]["p99"], 50.0, "ms", False,
                                broker_floor_p99_ms=st["broker_floor_ms"].get("p99"), rate=st["rate"], target_rate=5000),
        "steady_cpu_us_per_event_region": target("CPU per event per region, steady state",
                                                 st["cpu_us_per_event_region"], 5.0, "µs", False),
        "peak_rss_3r_mb": target(f"peak RSS draining {n:,} into 3 regions", c3["peak_rss_mb"], 100.0, "MB", False,
                                 events_drained=n, target_events=1_000_000),
    }
    resolve = {
        "catchup_1_vs_copy": target("catch-up, 1 region", vs_copy, 0.645, "× COPY (1.5 × 0.43)", True),
        "catchup_vs_kc_peer": target("catch-up vs KC-style peer", vs_kc, 1.0, "× KC-style peer", True),
    }
    return t, resolve


def targets_block(r):
    def line(t):
        v = "—" if t["value"] is None else f"{t['value']:,.2f}"
        extra = ""
        if "broker_floor_p99_ms" in t:
            extra = f"   (broker floor p99 {t['broker_floor_p99_ms'] or 0:.1f} ms)"
            if t["rate"] != t["target_rate"]:
                extra += f" (the target is set for {t['target_rate']:,} ev/s)"
        if t.get("events_drained", 1_000_000) != 1_000_000:
            extra = "   (the target is set for 1,000,000)"
        if t.get("backlog_events") is not None:
            extra = f"   ({t['backlog_events']:,}-event backlog)"
        return (f"  {'met ' if t['met'] else 'MISS'}  {t['figure']:46} {v:>9} {t['comparison']} {t['target']:g} "
                f"{t['unit']}{extra}")

    lines = ["", "targets (value, target; ratios to ceilings of this run)"]
    lines += [line(t) for t in r["targets"].values()]
    lines += ["resolve criteria"]
    lines += [line(t) for t in r["resolve"].values()]
    return lines


def table(r):
    ceil = r["ceiling"]["rows_per_s"]
    naive = r["naive"]["events_per_s"]

    def ratios(x):
        return f"{x / ceil:6.2f} × ceiling  {x / naive:7.1f} × naive" if ceil and naive else ""

    c1, c3, ra, st = r["catchup_1"], r["catchup_3"], r["reapply_3"], r["steady_3"]
    kc, kcd = r["kc_peer"], r["kc_daemon"]
    conns = r["parameters"].get("connections")
    lines = [
        f"region-replicator benchmark — {r['parameters']['events']} events, {r['parameters']['partitions']} partitions, "
        f"batches of ≤ {r['parameters']['batch_events']}, "
        f"{'apply.connections ' + str(conns) + ', ' if conns is not None else ''}{r['machine']['cores']} cores, load {' '.join(r['machine']['uptime_load'])}",
        "",
        f"{'measure':44} {'value':>14}   ratios",
        f"{'ceiling: COPY text, same rows (rows/s)':44} {ceil:14,.0f}",
        f"{'ceiling: 3 concurrent COPYs (rows/s)':44} {r['ceiling_3']['rows_per_s']:14,.0f}   one per region server",
        f"{'naive replicator: INSERT per event (ev/s)':44} {naive:14,.0f}",
        f"{'KC-style peer, an emulation (ev/s)':44} {kc['events_per_s']:14,.0f}   "
        f"Kafka Connect JDBC sink upsert, 3,000 rows/txn; {kc['backlog_events']:,}-event backlog, 1 region",
        f"{'catch-up, 1 region, the peer' + chr(39) + 's backlog (ev/s)':44} {kcd['events_per_s']:14,.0f}   "
        f"{kcd['events_per_s'] / max(kc['events_per_s'], 1e-9):.2f} × KC-style peer "
        f"{kcd['events_per_s'] / max(naive, 1e-9):6.1f} × naive, batches of {kcd['mean_batch_events'] or 0:,.0f} mean",
        f"{'catch-up, 1 region (ev/s)':44} {c1['events_per_s']:14,.0f}   {ratios(c1['events_per_s'])}",
        f"{'catch-up, 3 regions, slowest region (ev/s)':44} {c3['min_region_events_per_s']:14,.0f}   {ratios(c3['min_region_events_per_s'])}",
        f"{'catch-up, 3 regions, total (ev/s)':44} {c3['total_events_per_s']:14,.0f}   "
        f"{c3['total_events_per_s'] / max(r['ceiling_3']['rows_per_s'], 1e-9):.2f} × 3 concurrent COPYs",
        f"{'re-apply, 3 regions, slowest region (ev/s)':44} {ra['min_region_events_per_s']:14,.0f}   "
        f"{ra['min_region_events_per_s'] / max(c3['min_region_events_per_s'], 1e-9):.2f} × first apply",
        f"{'re-apply, 3 regions, total (ev/s)':44} {ra['total_events_per_s']:14,.0f}",
        f"{'steady ' + str(st['rate']) + ' ev/s → 3 regions: p50/p99 (histogram, ms)':44} "
        f"{st['daemon_histogram_ms']['p50']:6.1f} /{st['daemon_histogram_ms']['p99']:6.1f}",
        f"{'  p50/p99/max (stamped rows, ms)':44} {st['stamped_ms']['p50'] or 0:6.1f} /{st['stamped_ms']['p99'] or 0:6.1f}"
        f" /{st['stamped_ms']['max'] or 0:7.1f}",
        f"{'  p50/p99/max (bare consumer: broker floor, ms)':44} {st['broker_floor_ms'].get('p50') or 0:6.1f} /"
        f"{st['broker_floor_ms'].get('p99') or 0:6.1f} /{st['broker_floor_ms'].get('max') or 0:7.1f}",
        f"{'CPU µs per event per region: 1r / 3r / steady':44} {c1['cpu_us_per_event_region']:6.2f} /"
        f"{c3['cpu_us_per_event_region']:6.2f} /{st['cpu_us_per_event_region']:6.2f}",
        f"{'CPU s per 1,000 events: 1r / 3r':44} {c1['cpu_s_per_1000_events']:6.4f} /{c3['cpu_s_per_1000_events']:7.4f}",
        f"{'peak RSS draining, MB: 1r / 3r':44} {c1['peak_rss_mb']:6.1f} /{c3['peak_rss_mb']:6.1f}",
    ]
    sv, v = r["steady_3_verify"], r["verify"]
    lines += [
        f"{'steady + verify looping: p99 hist / stamped (ms)':44} {sv['daemon_histogram_ms']['p99']:6.1f} /"
        f"{sv['stamped_ms']['p99'] or 0:6.1f}   alone: {st['daemon_histogram_ms']['p99']:.1f} / {st['stamped_ms']['p99'] or 0:.1f}"
        f" ({sv.get('verify_runs', 0)} verify runs)",
        f"{'verify ' + format(v['rows_per_region'], ',') + ' rows × 3, 0 diffs (s)':44} {v['seconds_clean']:14.2f}   "
        f"naive {v['naive_seconds_clean']:.2f} s = {v['speedup_clean']:.1f} × slower",
        f"{'verify, 10 scattered diffs (s)':44} {v['seconds_10_diffs']:14.2f}   "
        f"naive {v['naive_seconds_10_diffs']:.2f} s = {v['speedup_10_diffs']:.1f} × slower; "
        f"{v['divergences_reported']} divergences named",
    ]
    return "\n".join(lines + targets_block(r))


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
    ap.add_argument("--connections", type=int, default=None, help="apply.connections (written only when given)")
    args = ap.parse_args()
    if args.broker_floor:
        broker_floor(args.brokers, args.topic, args.partitions, args.steady_seconds)
        return 0
    if args.produce_at_rate:
        produce_at_rate(args.brokers, args.topic, args.rate, args.steady_seconds, seed=args.seed)
        return 0
    results = run(args)
    results["targets"], results["resolve"] = targets(results)
    text = table(results)
    results["table"] = text.splitlines()
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(text)
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
