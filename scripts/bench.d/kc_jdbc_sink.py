#!/usr/bin/env python3
"""AN EMULATION of Kafka Connect's JDBC sink connector (upsert mode) — not Kafka Connect, not
region-replicator, and not to be used for anything but comparison.

Kafka Connect cannot be installed on these machines, so this does what the JDBC sink does with
`insert.mode=upsert`, `pk.mode=record_value` (`pk.fields=message_id`), `delete.enabled=true` and
`batch.size=3000` against Postgres:
  - consumes the topic with a plain Kafka consumer (confluent-kafka, as naive_replicator.py does);
  - sends one `INSERT … VALUES (…) ON CONFLICT (message_id) DO UPDATE SET <every other column> =
    EXCLUDED.…` per record — no version guard — pipelined (psycopg pipeline mode, as pgjdbc sends
    a JDBC batch), 3,000 records to a transaction;
  - turns a delete (`message.deleted`) into `DELETE … WHERE message_id = …` (delete.enabled); it
    keeps no tombstone, so an older upsert arriving later brings the row back;
  - commits the Kafka offsets after the database commit (Connect's framework commits the sink's
    consumer offsets; none are stored in the database);
  - with `--tasks N` (the connector's tasks.max), N processes share the partitions (task i takes
    the partitions p with p mod N = i, as Connect spreads them over its tasks), each with its own
    consumer and database connection: the same parallelism as the daemon's apply.connections.
It has none of region-replicator's guarantees (last-writer-wins by version, tombstones, offsets
stored in the same transaction as the rows): it is the cheaper statement those guarantees are
compared with. Other event types (`session.deleted`) are counted and skipped — the sink has no
equivalent. `scripts/bench` runs it on the same machine, broker, backlog and Postgres server as
the daemon, into a `LIKE messages INCLUDING ALL` table of its own (same columns and indexes).

Prints one JSON object: {"events", "seconds", "events_per_s", "transactions", "upserted", "deleted",
"skipped", "write_seconds", "cpu_percent", "tasks"}, counted from the first record of any task to the last
database commit of any task (connection and partition assignment excluded); write_seconds is the time spent decoding, writing, committing and committing offsets
(the rest is waiting for the broker); cpu_percent is this process's own CPU over that time (to show whether Python limits it).
"""
import argparse
import json
import multiprocessing
import queue as queue_module
import sys
import time

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

COLUMNS = ("message_id", "session_id", "role", "content", "region", "created_at", "version")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--table", default="kc_messages")
    ap.add_argument("--batch-size", type=int, default=3000, help="records per transaction (the sink's batch.size)")
    ap.add_argument("--max-events", type=int, required=True, help="stop after this many records")
    ap.add_argument("--idle-seconds", type=float, default=10.0, help="stop when nothing arrives for this long")
    ap.add_argument("--tasks", type=int, default=1, help="processes sharing the partitions (the sink's tasks.max)")
    args = ap.parse_args()
    if args.tasks < 1:
        ap.error("--tasks must be at least 1")
    total = multiprocessing.Value("q", 0)  # records consumed by all tasks: every task stops at --max-events
    queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=task, args=(args, i, total, queue)) for i in range(args.tasks)]
    for p in procs:
        p.start()
    outs = []
    while len(outs) < len(procs):
        try:
            outs.append(queue.get(timeout=1))
        except queue_module.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.kill()
                print("a task failed", file=sys.stderr)
                return 1
    for p in procs:
        p.join()
        if p.exitcode != 0:
            print(f"a task exited with {p.exitcode}", file=sys.stderr)
            return 1
    started = [o["start"] for o in outs if o["start"] is not None]
    elapsed = (max((o["end"] for o in outs if o["end"] is not None), default=min(started)) - min(started)) if started else 0.0
    n = sum(o["events"] for o in outs)
    cpu = sum(o["cpu"] for o in outs)
    print(json.dumps({"events": n, "seconds": round(elapsed, 3),
                      "events_per_s": round(n / elapsed, 1) if elapsed > 0 else 0.0,
                      **{k: sum(o[k] for o in outs) for k in ("transactions", "upserted", "deleted", "skipped")},
                      "write_seconds": round(sum(o["write_seconds"] for o in outs), 3),
                      "cpu_percent": round(100 * cpu / elapsed, 1) if elapsed > 0 else 0.0, "tasks": args.tasks}))
    return 0


def task(args, index, total, queue):
    """One task: the partitions p with p mod tasks = index; reports its figures on `queue`."""

    table = '"' + args.table.replace('"', '""') + '"'
    upsert = (f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
              f"ON CONFLICT (message_id) DO UPDATE SET "
              + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:]))
    delete = f"DELETE FROM {table} WHERE message_id = %s"

    db = psycopg.connect(args.dsn)
    # fetch.wait.max.ms as the daemon has it in the bench: Tansu answers a fetch only when it has passed.
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": "kc-jdbc-sink-emulation",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10, "log_level": 3})
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in range(args.partitions) if p % args.tasks == index])

    n = upserted = deleted = skipped = txns = 0
    db_seconds = 0.0
    start = cpu0 = end = None
    idle_since = time.monotonic()
    pending = []  # records of the open batch, in consumption order

    def flush():
        nonlocal upserted, deleted, skipped, txns, db_seconds, end
        t0 = time.monotonic()
        # One transaction, one pipeline: runs of upserts and deletes in record order (the sink
        # flushes its buffered upserts before a delete and vice versa).
        runs = []
        for m in pending:
            e = json.loads(m.value())
            kind = e.get("type")
            if kind == "message.upserted":
                row, sql = tuple(e[c] if c != "region" else e["origin_region"] for c in COLUMNS), upsert
                upserted += 1
            elif kind == "message.deleted":
                row, sql = (e["message_id"],), delete
                deleted += 1
            else:
                skipped += 1
                continue
            if runs and runs[-1][0] is sql:
                runs[-1][1].append(row)
            else:
                runs.append((sql, [row]))
        with db.transaction(), db.cursor() as cur:
            for sql, rows in runs:
                cur.executemany(sql, rows)  # pipelined by psycopg (libpq pipeline mode)
        txns += 1
        # After the database commit: the consumer's offsets (next record of each partition).
        last = {}
        for m in pending:
            last[m.partition()] = m.offset()
        consumer.commit(offsets=[TopicPartition(args.topic, p, o + 1) for p, o in last.items()], asynchronous=False)
        pending.clear()
        end = time.monotonic()
        db_seconds += end - t0

    while total.value < args.max_events:
        msgs = consumer.consume(num_messages=max(1, min(args.batch_size - len(pending), args.max_events - total.value)), timeout=0.5)
        now = time.monotonic()
        msgs = [m for m in msgs if not m.error()]
        if not msgs:
            if start is not None and now - idle_since > args.idle_seconds:
                break
            if pending:
                flush()  # the sink writes what a poll returned; it does not wait for a full batch
            continue
        if start is None:
            start, cpu0 = time.monotonic(), time.process_time()
        idle_since = now
        pending.extend(msgs)
        n += len(msgs)
        with total.get_lock():
            total.value += len(msgs)
        if len(pending) >= args.batch_size:
            flush()
    if pending:
        flush()
    cpu = time.process_time() - (cpu0 or 0)
    consumer.close()
    db.close()
    queue.put({"events": n, "start": start, "end": end, "cpu": cpu, "transactions": txns, "upserted": upserted,
               "deleted": deleted, "skipped": skipped, "write_seconds": db_seconds})


if __name__ == "__main__":
    sys.exit(main())
