"""The verify phase of the benchmark (for bench.py): `region-replicator verify` on N identical
rows x 3 regions, then with 10 scattered differences, beside a naive full download-and-compare
of the same tables."""
import json
import os
import subprocess
import time

import psycopg

from world import REGIONS, free_port, in_parallel, log

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

