"""The `/fresh` load measurement of the benchmark (`scripts/bench --fresh`, for bench.py).

Does a router asking `/fresh` 1,000 times a second slow the applier? The 1-region catch-up of
the backlog (as runs.catchup_1: a new database and consumer group each time, the clock starting
when the stored offsets first move) is measured 2 × --fresh-rounds times, alternately alone and
while a load generator (this file run as `bench.py --fresh-load`, its own process, asyncio on
keep-alive connections) sends --fresh-rate requests/s to the same daemon. Order: alone, loaded,
alone, loaded, … so that drift of the shared machine falls on both sides.

The mix, in turn: token-less (`?region=R`), a token of a record in the backlog (`&token=T`),
the same with `&wait_ms=200`, token-less with `&wait_ms=100`. Tokens are computed as the
application computes them (examples/python: FNV-1a 64 of "<cluster id>/<topic>", partition,
offset) for offsets below each partition's end offset. The generator reports requests
completed, the achieved rate, the answers' status counts and its own CPU; the daemon's CPU per
event is measured over each drain as in the catch-up."""
import asyncio
import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request

import psycopg
from confluent_kafka import Consumer, TopicPartition

from measure import drain
from workload import produce_backlog
from world import REGIONS, TOPIC, World, free_port, log, perf_report, stop, utc_now_text

DRIVER = os.path.join(os.path.dirname(__file__), "bench.py")
KINDS = ["plain", "token", "token_wait", "plain_wait"]
CONNECTIONS = 64


def tokens(brokers, topic, partitions, count, seed=11):
    """`count` session tokens of records on `topic` (below each partition's end offset)."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-fresh-tokens", "log_level": 3})
    try:
        cluster = c.list_topics(topic, timeout=10).cluster_id or ""
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
    finally:
        c.close()
    h = 0xcbf29ce484222325
    for b in f"{cluster}/{topic}".encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    scope = h.to_bytes(8, "big")
    rng = random.Random(seed)
    live = [p for p, end in ends.items() if end > 0]
    out = []
    for _ in range(count):
        p = rng.choice(live)
        raw = bytes([1]) + scope + p.to_bytes(4, "big") + rng.randrange(ends[p]).to_bytes(8, "big")
        out.append(base64.urlsafe_b64encode(raw).rstrip(b"=").decode())
    return out


async def load(port, region, rate, token_list):
    """Sends `rate` requests/s until SIGTERM; returns the summary."""
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    queue = asyncio.Queue()
    status, by_kind, errors = {}, {k: {} for k in KINDS}, [0]
    done = [0]

    def path(i):
        kind = KINDS[i % len(KINDS)]
        q = f"region={region}"
        if kind.startswith("token"):
            q += f"&token={token_list[i % len(token_list)]}"
        if kind == "token_wait":
            q += "&wait_ms=200"
        elif kind == "plain_wait":
            q += "&wait_ms=100"
        return kind, f"/fresh?{q}"

    async def worker():
        reader = writer = None
        while True:
            kind, p = await queue.get()
            for _ in range(2):  # once more on a fresh connection if the kept-alive one was closed
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    code = lines[0].split(" ")[1]
                    length = next((int(x.split(":", 1)[1]) for x in lines if x.lower().startswith("content-length:")), 0)
                    await reader.readexactly(length)
                    status[code] = status.get(code, 0) + 1
                    by_kind[kind][code] = by_kind[kind].get(code, 0) + 1
                    done[0] += 1
                    break
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError, ValueError):
                    if writer is not None:
                        writer.close()
                    reader = writer = None
            else:
                errors[0] += 1
            queue.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(CONNECTIONS)]
    t0 = time.monotonic()
    sent = 0
    while not stopping.is_set():
        due = int((time.monotonic() - t0) * rate)
        while sent < due:
            queue.put_nowait(path(sent))
            sent += 1
        try:
            await asyncio.wait_for(stopping.wait(), 0.005)
        except asyncio.TimeoutError:
            pass
    seconds = time.monotonic() - t0
    for w in workers:
        w.cancel()
    return {"seconds": round(seconds, 3), "scheduled": sent, "completed": done[0], "failed": errors[0],
            "backlog_at_stop": queue.qsize(), "achieved_per_s": round(done[0] / max(seconds, 1e-9), 1),
            "status_counts": status, "by_kind": by_kind, "connections": CONNECTIONS}


def load_main(args):
    """`bench.py --fresh-load`: the generator process. Prints its summary as one JSON line on SIGTERM."""
    token_list = json.loads(sys.stdin.read())
    out = asyncio.run(load(args.fresh_port, args.fresh_region, args.fresh_rate, token_list))
    usage = os.times()
    out["cpu_s"] = round(usage.user + usage.system, 3)
    print(json.dumps(out), flush=True)


def one_drain(world, args, name, n, token_list):
    """The 1-region catch-up of the backlog into a new database; with `token_list`, while the
    generator runs against the daemon (with --profile, the daemon then runs under `perf record`,
    its report by thread and by symbol written beside the JSON)."""
    db = f"bench_{name.replace('-', '_')}"
    world.create_db(0, db)
    http = free_port()
    cfg = world.config(name, [(0, REGIONS[0], db)], http, topic=TOPIC)
    with psycopg.connect(world.dsn(0, db), autocommit=True) as c:
        c.execute("CHECKPOINT")
    perf_data = os.path.join(world.dir, f"perf-{name}.data") if args.profile and token_list is not None else None
    d, pid = world.start_daemon(cfg, name, perf_data)
    gen = None
    try:
        if token_list is not None:
            deadline = time.monotonic() + 30
            while True:  # the HTTP listener answers before the consumer group has joined
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{http}/health/live", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or d.poll() is not None:
                        raise RuntimeError(f"the daemon's HTTP listener did not answer within 30 s ({name})")
                    time.sleep(0.05)
            gen = subprocess.Popen([sys.executable, DRIVER, "--fresh-load", "--fresh-port", str(http),
                                    "--fresh-region", REGIONS[0], "--fresh-rate", str(args.fresh_rate)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            gen.stdin.write(json.dumps(token_list))
            gen.stdin.close()
        per, cpu, _ = drain(world, d, pid, [(0, db)], n, args.timeout)
        fresh = None
        if gen is not None:
            gen.send_signal(signal.SIGTERM)
            text = gen.stdout.read()
            gen.wait(60)
            gen = None
            fresh = json.loads(text.strip().splitlines()[-1])
    finally:
        if gen is not None:
            gen.kill()
            gen.wait()
        stop(d, pid)
    if perf_data is not None:
        for sort, suffix in (("comm", f".perf-{name}-threads.txt"), ("dso,symbol", f".perf-{name}.txt")):
            log(f"  profile of the daemon (perf, cpu-clock) under /fresh load: {perf_report(perf_data, args.json, suffix, sort=sort)}")
    out = {"name": name, "with_fresh": token_list is not None, "events": per[0]["events"],
           "events_per_s": per[0]["events_per_s"], "seconds": per[0]["seconds"],
           "cpu_us_per_event_region": round(cpu / max(per[0]["events"], 1) * 1e6, 2)}
    if fresh is not None:
        out["fresh"] = fresh
    return out


def fresh_run(args):
    """The measurement; returns the figures (the JSON without its targets and table)."""
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    world = World(args)
    n = args.events
    results = {"mode": "fresh",
               "machine": {"cores": os.cpu_count(), "uptime_load": open("/proc/loadavg").read().split()[:3]},
               "parameters": {"events": n, "fresh_rate": args.fresh_rate, "rounds": args.fresh_rounds,
                              "mix": KINDS, "partitions": args.partitions, "batch_events": args.batch_events,
                              "batch_delay_ms": args.batch_delay_ms, "build": args.build, "connections": args.connections,
                              "generator_connections": CONNECTIONS},
               "started_at": utc_now_text()}
    produce_backlog(args.brokers, n, seed=42)
    token_list = tokens(args.brokers, TOPIC, args.partitions, 1000)
    runs = []
    for k in range(args.fresh_rounds):
        for loaded in (False, True):
            name = f"fresh-{'loaded' if loaded else 'alone'}-{k + 1}"
            log(f"catch-up, 1 region, {'with ' + str(args.fresh_rate) + ' /fresh requests/s' if loaded else 'alone'} ({name})")
            runs.append(one_drain(world, args, name, n, token_list if loaded else None))
            log(f"  {runs[-1]}")
    results["runs"] = runs

    def mean(xs):
        return round(sum(xs) / len(xs), 2)

    alone = [r for r in runs if not r["with_fresh"]]
    loaded = [r for r in runs if r["with_fresh"]]
    counts = {}
    for r in loaded:
        for code, c in r["fresh"]["status_counts"].items():
            counts[code] = counts.get(code, 0) + c
    results["alone"] = {"events_per_s": mean([r["events_per_s"] for r in alone]),
                        "cpu_us_per_event_region": mean([r["cpu_us_per_event_region"] for r in alone])}
    results["with_fresh"] = {"events_per_s": mean([r["events_per_s"] for r in loaded]),
                             "cpu_us_per_event_region": mean([r["cpu_us_per_event_region"] for r in loaded]),
                             "achieved_requests_per_s": mean([r["fresh"]["achieved_per_s"] for r in loaded]),
                             "generator_cpu_s": mean([r["fresh"]["cpu_s"] for r in loaded]),
                             "status_counts": counts}
    results["finished_at"] = utc_now_text()
    return results


def fresh_targets(r, target):
    """A router asking `fresh_rate` times a second slows the 1-region apply by at most 5 %."""
    a, w = r["alone"]["events_per_s"], r["with_fresh"]["events_per_s"]
    return {"fresh_vs_alone": target(f"catch-up with {r['parameters']['fresh_rate']:,} /fresh/s vs alone",
                                     w / a if a else None, 0.95, "× alone", True)}


def fresh_table(r):
    a, w = r["alone"], r["with_fresh"]
    lines = [f"region-replicator /fresh load benchmark — {r['parameters']['events']:,}-event backlog, 1 region, "
             f"{r['parameters']['partitions']} partitions, {r['machine']['cores']} cores, "
             f"load {' '.join(r['machine']['uptime_load'])}, build {r['parameters']['build']}", "",
             f"{'run':28} {'ev/s':>10} {'CPU µs/ev':>10}   /fresh"]
    for x in r["runs"]:
        f = x.get("fresh")
        extra = "" if f is None else (f"{f['achieved_per_s']:,.0f} req/s achieved, statuses {f['status_counts']}, "
                                      f"generator CPU {f['cpu_s']:.1f} s")
        lines.append(f"{x['name']:28} {x['events_per_s']:10,.0f} {x['cpu_us_per_event_region']:10.2f}   {extra}")
    lines += ["",
              f"{'alone (mean)':28} {a['events_per_s']:10,.0f} {a['cpu_us_per_event_region']:10.2f}",
              f"{'with /fresh (mean)':28} {w['events_per_s']:10,.0f} {w['cpu_us_per_event_region']:10.2f}   "
              f"{w['achieved_requests_per_s']:,.0f} req/s achieved, statuses {w['status_counts']}",
              f"{'ratio with / alone':28} {w['events_per_s'] / max(a['events_per_s'], 1e-9):10.3f}"]
    return lines
