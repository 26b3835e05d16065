"""The steady-state phase of the benchmark (for bench.py): a paced producer into the three
regions the 3-region catch-up filled, on librdkafka's mock cluster (`rr-devtool broker`), once
alone and once with `region-replicator verify` running in a loop; apply latency from the
daemon's histogram, from the stamped rows and from a bare consumer (the broker's share)."""
import json
import os
import subprocess
import sys
import threading
import time

import psycopg

from measure import drain, histogram, quantile, scrape
from world import (REGIONS, STEADY_TOPIC, cpu_seconds, free_port, log, peak_rss_mb, start_mock, stop, utc_now_text,
                   wait_assigned)

# The producer and the bare consumer run as child processes of the driver
# (`bench.py --produce-at-rate`, `bench.py --broker-floor`).
DRIVER = os.path.join(os.path.dirname(__file__), "bench.py")


def steady_phase(world, args, d, pid, http_s, dbs3, mock_brokers, applied, verify_config=None, seed=7):
    """One steady-state measurement on the running steady daemon. With `verify_config`,
    `region-replicator verify` runs in a loop meanwhile. Returns (figures, events sent)."""
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
    floor = subprocess.Popen([sys.executable, DRIVER, "--broker-floor", "--brokers", mock_brokers,
                              "--topic", STEADY_TOPIC, "--partitions", str(args.partitions),
                              "--steady-seconds", str(args.steady_seconds + 5)],
                             stdout=subprocess.PIPE, text=True)
    time.sleep(1)  # let it assign before the first record
    if verifier:
        verifier.start()
    try:
        prod = subprocess.run([sys.executable, DRIVER, "--produce-at-rate", "--brokers", mock_brokers,
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


def steady_runs(world, args, dbs3, n):
    """The steady state, alone and with verify looping, on the regions of `dbs3` (which hold the
    `n` backlog events). Returns {"steady_3": figures, "steady_3_verify": figures}."""
    # On librdkafka's mock cluster (`rr-devtool broker`), not Tansu: measured here with bare
    # consumers, Tansu delivers records with p50 ~400 ms / p99 ~2 s at this rate (it stalls),
    # the mock cluster with p50 ~9 ms / p99 ~19 ms. The broker's own share is measured below.
    # Settle first: the backlog phases left autovacuum/analyze work and dirty WAL behind; a
    # steady state measured during that aftermath would show the catch-up's checkpoint, not
    # the daemon's latency.
    results = {}
    for i, db in dbs3:
        with psycopg.connect(world.dsn(i, db), autocommit=True) as c:
            c.execute("VACUUM ANALYZE")
            c.execute("CHECKPOINT")
    mock, mock_brokers = start_mock(world, STEADY_TOPIC, args.partitions)
    try:
        http_s = free_port()
        cfg_s = world.config("steady", [(i, REGIONS[i], "bench_3r") for i in range(3)], http_s,
                             brokers=mock_brokers, topic=STEADY_TOPIC, level="info")
        d, pid = world.start_daemon(cfg_s, "steady")
        try:
            wait_assigned(world, "steady", d, count=3 * (args.connections or 2))  # every shard of every region
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
    return results
