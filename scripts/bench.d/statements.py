#!/usr/bin/env python3
"""Statement microbenchmark (not the daemon): the region's apply statement and its alternatives,
on one Postgres with a pre-filled messages table, driven from Python (psycopg 3, binary params).

Variants (the upsert part differs; tombstones use the daemon's set-based statements in all):
  unnest-old   the daemon's multi-row unnest statement as it was (counting joins always run)
  unnest       the same with the counting joins skipped when every row applied (the daemon's)
  copy-merge   COPY (binary) into a reused ON COMMIT DELETE ROWS temp table, then one set-based
               merge with the same guards (two round trips: COPY cannot be pipelined)
  per-row      one INSERT ... ON CONFLICT DO UPDATE ... WHERE guard per event, with the
               tombstone NOT EXISTS checks and a per-row outcome, pipelined in one transaction
  unnest-trig  `unnest` into the table with migrate's PL/pgSQL id trigger (BEFORE INSERT FOR EACH ROW)
  unnest-when  the same with the trigger under `WHEN (NEW.message_id IS NULL)`
  copy-merge-trig  `copy-merge` with the id trigger
  unnest-noprobe  diagnostic, not an apply path: `unnest` without the three NOT EXISTS probes
               (only the ON CONFLICT … WHERE version guard; tombstones not checked) — what they cost
  copy         the reference, not an apply path: the batch's upserts by binary COPY into an empty
               table of the same shape (no guard, no tombstones; "new" pass only)
Variants without "trig"/"when" run on the table without a trigger.

  --trigger-ab ROWS  instead of the variants: the id trigger alone, A/B/C alternating for --rounds:
               a server-side INSERT … SELECT of ROWS generated rows (each with a message_id, as the
               daemon writes them) into a fresh table with no trigger, the plain trigger, and the
               trigger under WHEN (NEW.message_id IS NULL); backend CPU per row.

Each batch: BEGIN, the statements, COMMIT. "new" batches: mostly new messages, some updates of
existing rows (version + 1), a few message and session tombstones. "dup" batches: the same
batches re-applied (duplicates). Prints rows/s (wall, includes this Python client) and the
server's CPU per row (all processes of the cluster, and the benchmark's backend alone, from /proc)
per variant and round.

  statements.py --port P [--rows 1000000] [--batches 20] [--batch 1000] [--rounds 3]
"""
import argparse
import json
import os
import random
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg

T = "messages"
H = "sha256(convert_to({c}, 'UTF8') || '\\x00'::bytea || convert_to('', 'UTF8'))"
COLS = "message_id, session_id, role, content, region, created_at, version, replicated_at"
GUARDS = f"""
    WHERE NOT EXISTS (SELECT 1 FROM {T} e WHERE e.message_id = u.message_id
                      AND (e.version > u.version OR (e.version = u.version AND {H.format(c='e.content')} >= {H.format(c='u.content')})))
      AND NOT EXISTS (SELECT 1 FROM replicator_message_tombstones mt WHERE mt.message_id = u.message_id AND mt.version >= u.version)
      AND NOT EXISTS (SELECT 1 FROM replicator_session_tombstones st WHERE st.session_id = u.session_id AND st.deleted_at >= u.created_at)
    ON CONFLICT (message_id) DO UPDATE
    SET session_id = excluded.session_id, role = excluded.role, content = excluded.content, region = excluded.region,
        created_at = excluded.created_at, version = excluded.version, replicated_at = now()
    WHERE m.version < excluded.version OR (m.version = excluded.version AND {H.format(c='excluded.content')} > {H.format(c='m.content')})
    RETURNING m.message_id AS message_id"""
INSERT = f"""INSERT INTO {T} AS m ({COLS})
    SELECT u.message_id, u.session_id, u.role, u.content, u.region, u.created_at, u.version, now() FROM u"""
UNNEST = """u AS (SELECT * FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::text[], %b::text[], %b::timestamptz[],
                                   %b::bigint[], %b::text[]) WITH ORDINALITY
              AS u(message_id, session_id, role, content, region, created_at, version, attributes, i))"""
DUPJOIN = f"""(SELECT count(*) FROM u JOIN {T} e ON e.message_id = u.message_id AND e.version = u.version
                AND {H.format(c='e.content')} = {H.format(c='u.content')})"""
OLD_RESULT = f"""SELECT (SELECT count(*) FROM ins), {DUPJOIN},
       (SELECT string_agg(u.i::text, ',') FROM ins JOIN u USING (message_id))"""
NEW_RESULT = f"""n AS MATERIALIZED (SELECT (SELECT count(*) FROM ins) AS applied, (SELECT count(*) FROM u) AS total)
SELECT n.applied, CASE WHEN n.applied < n.total THEN {DUPJOIN} ELSE 0 END,
       CASE WHEN n.applied < n.total THEN (SELECT string_agg(u.i::text, ',') FROM ins JOIN u USING (message_id)) END
FROM n"""
UPSERT_OLD = f"WITH {UNNEST},\nins AS ({INSERT} {GUARDS})\n{OLD_RESULT}"
UPSERT_NEW = f"WITH {UNNEST},\nins AS ({INSERT} {GUARDS}),\n{NEW_RESULT}"
UPSERT_NOPROBE = f"WITH {UNNEST},\nins AS ({INSERT} {GUARDS[GUARDS.index('ON CONFLICT'):]}),\n{NEW_RESULT}"
STAGE = """CREATE TEMP TABLE IF NOT EXISTS rr_stage (message_id uuid, session_id text, role text, content text,
    region text, created_at timestamptz, version bigint, attributes text, i bigint) ON COMMIT DELETE ROWS"""
MERGE = f"WITH u AS MATERIALIZED (SELECT * FROM rr_stage),\nins AS ({INSERT} {GUARDS}),\n{NEW_RESULT}"
PER_ROW = f"""WITH u AS (SELECT %b::uuid AS message_id, %b::text AS session_id, %b::text AS role, %b::text AS content,
                         %b::text AS region, %b::timestamptz AS created_at, %b::bigint AS version),
ins AS ({INSERT} {GUARDS})
SELECT (SELECT count(*) FROM ins), CASE WHEN NOT EXISTS (SELECT FROM ins) THEN {DUPJOIN} ELSE 0 END"""
SESSION_TOMBSTONES = f"""WITH s AS (SELECT * FROM unnest(%b::text[], %b::timestamptz[]) WITH ORDINALITY AS s(session_id, deleted_at, i)),
t AS (INSERT INTO replicator_session_tombstones AS t (session_id, deleted_at) SELECT session_id, deleted_at FROM s
      ON CONFLICT (session_id) DO UPDATE SET deleted_at = excluded.deleted_at WHERE t.deleted_at < excluded.deleted_at
      RETURNING t.session_id),
d AS (DELETE FROM {T} m USING s WHERE m.session_id = s.session_id AND m.created_at <= s.deleted_at RETURNING 1),
n AS MATERIALIZED (SELECT (SELECT count(*) FROM t) AS applied, (SELECT count(*) FROM s) AS total)
SELECT n.applied, CASE WHEN n.applied < n.total THEN (SELECT count(*) FROM s JOIN replicator_session_tombstones o
          ON o.session_id = s.session_id AND o.deleted_at = s.deleted_at) ELSE 0 END,
       CASE WHEN n.applied < n.total THEN (SELECT string_agg(s.i::text, ',') FROM t JOIN s USING (session_id)) END,
       (SELECT count(*) FROM d)
FROM n"""
MESSAGE_TOMBSTONES = f"""WITH d AS (SELECT * FROM unnest(%b::uuid[], %b::text[], %b::bigint[], %b::timestamptz[]) WITH ORDINALITY
           AS d(message_id, session_id, version, deleted_at, i)),
t AS (INSERT INTO replicator_message_tombstones AS t (message_id, session_id, version, deleted_at)
      SELECT message_id, session_id, version, deleted_at FROM d
      ON CONFLICT (message_id) DO UPDATE SET version = excluded.version, session_id = excluded.session_id, deleted_at = excluded.deleted_at
      WHERE t.version < excluded.version RETURNING t.message_id),
x AS (DELETE FROM {T} m USING d WHERE m.message_id = d.message_id AND m.version <= d.version RETURNING 1),
n AS MATERIALIZED (SELECT (SELECT count(*) FROM t) AS applied, (SELECT count(*) FROM d) AS total)
SELECT n.applied, CASE WHEN n.applied < n.total THEN (SELECT count(*) FROM d JOIN replicator_message_tombstones o
          ON o.message_id = d.message_id AND o.version = d.version) ELSE 0 END,
       CASE WHEN n.applied < n.total THEN (SELECT string_agg(d.i::text, ',') FROM t JOIN d USING (message_id)) END
FROM n"""


TRIGGER_FN = """CREATE OR REPLACE FUNCTION bench_derive_id() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF NEW.message_id IS NULL THEN NEW.message_id := gen_random_uuid(); END IF;
    RETURN NEW;
END $f$"""


def set_trigger(c, variant):
    """The id trigger as `variant` wants it (outside the timed part): none, plain, or under WHEN."""
    c.execute(f"DROP TRIGGER IF EXISTS bench_derive_id ON {T}")
    if variant.endswith("-trig"):
        c.execute(f"CREATE TRIGGER bench_derive_id BEFORE INSERT ON {T} FOR EACH ROW EXECUTE FUNCTION bench_derive_id()")
    elif variant.endswith("-when"):
        c.execute(f"CREATE TRIGGER bench_derive_id BEFORE INSERT ON {T} FOR EACH ROW WHEN (NEW.message_id IS NULL) "
                  "EXECUTE FUNCTION bench_derive_id()")


def apply_copy_only(conn, batch):
    ups, mts, sts = batch
    with conn.transaction():
        cur = conn.cursor()
        with cur.copy(f"COPY {T}_copy ({COLS}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["uuid", "text", "text", "text", "text", "timestamptz", "int8", "timestamptz"])
            now = datetime.now(timezone.utc)
            for r in ups:
                cp.write_row(r + (now,))
    return [(len(ups), 0)]


def trigger_ab(c, backend, rows, rounds):
    """Backend CPU per inserted row: no trigger, the plain PL/pgSQL trigger, the trigger under WHEN."""
    modes = {"none": None, "plain": "", "when": "WHEN (NEW.message_id IS NULL)"}
    res = {m: [] for m in modes}
    for rnd in range(1, rounds + 1):
        for m, clause in modes.items():
            c.execute("DROP TABLE IF EXISTS trig_ab")
            c.execute(f"CREATE TABLE trig_ab (LIKE {T} INCLUDING ALL)")
            if clause is not None:
                c.execute(f"CREATE TRIGGER trig_ab_id BEFORE INSERT ON trig_ab FOR EACH ROW {clause} EXECUTE FUNCTION bench_derive_id()")
            b0 = server_cpu(None, backend)
            c.execute(f"""INSERT INTO trig_ab SELECT gen_random_uuid(), 's' || (g % 20000), 'user', repeat('x', 300), 'us-east-1',
                now() + g * interval '1 ms', 1, now() FROM generate_series(1, {rows}) g""")
            res[m].append((server_cpu(None, backend) - b0) / rows * 1e6)
            print(f"{rnd:>5} {m:<6} backend {res[m][-1]:6.2f} µs/row", flush=True)
    c.execute("DROP TABLE IF EXISTS trig_ab")
    print("== median; uptime:", os.popen("uptime").read().strip())
    for m, xs in res.items():
        xs = sorted(xs)
        print(f"   {m:<6} backend {xs[len(xs) // 2]:6.2f} µs/row  (runs: " + ", ".join(f"{x:.2f}" for x in xs) + ")")
    d = sorted(p - w for p, w in zip(res["plain"], res["when"]))
    print(f"   plain − when, paired by round: median {d[len(d) // 2]:.2f} µs/row  (" + ", ".join(f"{x:.2f}" for x in d) + ")")


def setup(c, rows):
    c.execute(f"""CREATE TABLE IF NOT EXISTS {T} (message_id uuid PRIMARY KEY, session_id text NOT NULL, role text NOT NULL,
        content text NOT NULL, region text NOT NULL, created_at timestamptz NOT NULL, version bigint NOT NULL DEFAULT 1,
        replicated_at timestamptz NOT NULL DEFAULT now())""")
    c.execute(f"CREATE INDEX IF NOT EXISTS messages_session_created_idx ON {T} (session_id, created_at)")
    c.execute("CREATE TABLE IF NOT EXISTS replicator_message_tombstones (message_id uuid PRIMARY KEY, session_id text NOT NULL, "
              "version bigint NOT NULL, deleted_at timestamptz NOT NULL)")
    c.execute("CREATE TABLE IF NOT EXISTS replicator_session_tombstones (session_id text PRIMARY KEY, deleted_at timestamptz NOT NULL)")
    have = c.execute(f"SELECT count(*) FROM {T}").fetchone()[0]
    if have < rows:
        c.execute(f"""INSERT INTO {T} SELECT gen_random_uuid(), 's' || (g % 100000), 'user', repeat(md5(g::text), 13),
            'us-east-1', now() - interval '2 days' + g * interval '1 ms', 1, now() FROM generate_series({have + 1}, {rows}) g""")
    c.execute(f"VACUUM ANALYZE {T}")
    c.execute("VACUUM ANALYZE replicator_message_tombstones")
    c.execute("VACUUM ANALYZE replicator_session_tombstones")
    c.execute(f"CREATE TABLE IF NOT EXISTS {T}_copy (LIKE {T} INCLUDING ALL)")
    c.execute(TRIGGER_FN)


class Gen:
    def __init__(self, c, seed):
        self.rng = random.Random(seed)
        self.pool = [tuple(r) for r in c.execute(
            f"SELECT message_id, session_id, created_at, version FROM {T} TABLESAMPLE SYSTEM (6) LIMIT 60000")]
        self.rng.shuffle(self.pool)
        self.n = 0

    def batch(self, size):
        """(upserts, message tombstones, session tombstones): ~93 % new, 5 % updates, 2 % tombstones."""
        now = datetime.now(timezone.utc)
        ups, mts, sts = [], [], []
        for _ in range(size * 93 // 100):
            self.n += 1
            ups.append((uuid.uuid4(), f"n{self.n // 10}", "user", os.urandom(200).hex(), "us-east-1", now, 1))
        for _ in range(size * 5 // 100):
            mid, sid, created, version = self.pool.pop()
            ups.append((mid, sid, "assistant", os.urandom(200).hex(), "us-east-1", created, version + 1))
        for _ in range(size * 2 // 100 - 2):
            mid, sid, created, version = self.pool.pop()
            mts.append((mid, sid, version + 1, now))
        sts = [(f"s{self.rng.randrange(100000)}", now - timedelta(days=1)) for _ in range(2)]
        self.rng.shuffle(ups)
        return ups, mts, sts


def cols(rows, n):
    return [[r[k] for r in rows] for k in range(n)]


def tombstones(cur, mts, sts):
    out = []
    if sts:
        out.append(cur.execute(SESSION_TOMBSTONES, cols(sts, 2)).fetchone())
    if mts:
        out.append(cur.execute(MESSAGE_TOMBSTONES, cols(mts, 4)).fetchone())
    return out


def apply_unnest(conn, batch, sql):
    ups, mts, sts = batch
    with conn.pipeline(), conn.transaction():
        cur = conn.cursor()
        res = tombstones(cur, mts, sts)
        res.append(cur.execute(sql, cols(ups, 7) + [[None] * len(ups)]).fetchone())
    return [r[:2] for r in res]


def apply_copy(conn, batch):
    ups, mts, sts = batch
    with conn.transaction():
        cur = conn.cursor()
        with cur.copy("COPY rr_stage (message_id, session_id, role, content, region, created_at, version, i) "
                      "FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["uuid", "text", "text", "text", "text", "timestamptz", "int8", "int8"])
            for i, r in enumerate(ups, 1):
                cp.write_row(r + (i,))
        with conn.pipeline():
            res = tombstones(cur, mts, sts)
            res.append(cur.execute(MERGE).fetchone())
    return [r[:2] for r in res]


def apply_per_row(conn, batch):
    ups, mts, sts = batch
    with conn.pipeline(), conn.transaction():
        cur = conn.cursor()
        res = tombstones(cur, mts, sts)
        cur.executemany(PER_ROW, ups, returning=True)
        applied = dup = 0
        while True:
            a, d = cur.fetchone()
            applied += a
            dup += d
            if not cur.nextset():
                break
        res.append((applied, dup))
    return [r[:2] for r in res]


def server_cpu(postmaster, only=None):
    """CPU seconds of the cluster's processes (postmaster and its children), or of process `only`."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if (int(p) == only) if only else (int(p) == postmaster or int(f[1]) == postmaster):
            total += int(f[11]) + int(f[12])
        if not only and int(p) == postmaster:  # children that exited meanwhile (autovacuum workers)
            total += int(f[13]) + int(f[14])
    return total / tick


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--dbname", default="postgres")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default="unnest-old,unnest,copy-merge,per-row")
    ap.add_argument("--json")
    ap.add_argument("--trigger-ab", type=int, default=0, metavar="ROWS")
    a = ap.parse_args()
    conn = psycopg.connect(host=a.host, port=a.port, user="postgres", dbname=a.dbname, autocommit=True)
    conn.execute("SET jit = off")
    print(f"== preparing {a.rows} rows", flush=True)
    setup(conn, a.rows)
    conn.execute(STAGE)
    backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    postmaster = int(open(f"/proc/{backend}/stat").read().rsplit(")", 1)[1].split()[1])
    if a.trigger_ab:
        trigger_ab(conn, backend, a.trigger_ab, a.rounds)
        return
    gen = Gen(conn, 7)
    run = {"unnest-old": lambda b: apply_unnest(conn, b, UPSERT_OLD), "unnest": lambda b: apply_unnest(conn, b, UPSERT_NEW),
           "copy-merge": lambda b: apply_copy(conn, b), "per-row": lambda b: apply_per_row(conn, b),
           "unnest-trig": lambda b: apply_unnest(conn, b, UPSERT_NEW), "unnest-when": lambda b: apply_unnest(conn, b, UPSERT_NEW),
           "copy-merge-trig": lambda b: apply_copy(conn, b), "copy": lambda b: apply_copy_only(conn, b),
           "unnest-noprobe": lambda b: apply_unnest(conn, b, UPSERT_NOPROBE)}
    variants = a.variants.split(",")
    results = []
    print("   CPU per row: µs of user+sys CPU per event; server = every process of the cluster, backend = the"
          " benchmark's session, client = this Python driver (psycopg; the daemon's own client cost is far lower)")
    print(f"{'round':>5} {'variant':<11} {'pass':<4} {'rows/s':>8} {'server µs':>10} {'backend µs':>10} {'client µs':>10}  outcomes [applied, duplicate] per statement")
    for rnd in range(1, a.rounds + 1):
        for v in variants:
            batches = [gen.batch(a.batch) for _ in range(a.batches)]
            n = sum(len(u) + len(m) + len(s) for u, m, s in batches)
            set_trigger(conn, v)
            for kind in (("new",) if v == "copy" else ("new", "dup")):
                cpu0, b0, t0 = server_cpu(postmaster), server_cpu(postmaster, backend), time.perf_counter()
                c0 = time.process_time()
                outs = [run[v](b) for b in batches]
                dt, cpu = time.perf_counter() - t0, server_cpu(postmaster) - cpu0
                bcpu, ccpu = server_cpu(postmaster, backend) - b0, time.process_time() - c0
                tot = [[sum(o[k][j] for o in outs) for j in range(2)] for k in range(len(outs[0]))]
                results.append({"round": rnd, "variant": v, "pass": kind, "rows": n, "seconds": dt, "server_cpu_s": cpu,
                                "backend_cpu_s": bcpu, "client_cpu_s": ccpu})
                print(f"{rnd:>5} {v:<11} {kind:<4} {n / dt:>8.0f} {cpu / n * 1e6:>10.1f} {bcpu / n * 1e6:>10.1f} {ccpu / n * 1e6:>10.1f}  {tot}", flush=True)
    set_trigger(conn, "none")
    print("== median per variant; uptime:", os.popen("uptime").read().strip())
    for v in variants:
        for kind in (("new",) if v == "copy" else ("new", "dup")):
            rs = sorted(r["rows"] / r["seconds"] for r in results if r["variant"] == v and r["pass"] == kind)
            cs = sorted(r["server_cpu_s"] / r["rows"] * 1e6 for r in results if r["variant"] == v and r["pass"] == kind)
            bs = sorted(r["backend_cpu_s"] / r["rows"] * 1e6 for r in results if r["variant"] == v and r["pass"] == kind)
            ps = sorted(r["client_cpu_s"] / r["rows"] * 1e6 for r in results if r["variant"] == v and r["pass"] == kind)
            print(f"   {v:<11} {kind:<4} {rs[len(rs) // 2]:>8.0f} rows/s  server {cs[len(cs) // 2]:>6.1f} µs/row  "
                  f"backend {bs[len(bs) // 2]:>6.1f}  client (Python) {ps[len(ps) // 2]:>6.1f} µs/row  (rows/s runs: "
                  + ", ".join(f"{x:.0f}" for x in rs) + ")")
    if a.json:
        json.dump(results, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
