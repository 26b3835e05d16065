"""What the benchmark reads while the daemon runs (for bench.py): each region's stored offsets
(the throughput clocks) and the daemon's Prometheus metrics (histograms, counters)."""
import time
import urllib.request

import psycopg

from world import cpu_seconds, peak_rss_mb


def offsets_sum(conn):
    return int(conn.execute("SELECT coalesce(sum(next_offset), 0) FROM replicator_offsets").fetchone()[0])


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
