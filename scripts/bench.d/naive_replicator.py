#!/usr/bin/env python3
"""THE NAIVE BASELINE — not region-replicator, and not to be used for anything but comparison.

This is the approach of the article region-replicator grew from ("Multi-Region Deployment for
AI Agents: Serving Global Users with Low Latency", whose application writes each message
locally and publishes it for replication): a Kafka consumer that, for every event, runs one
`INSERT … ON CONFLICT DO NOTHING` in autocommit against the region's database. `scripts/bench` runs it on the same machine, against the same broker, the same
backlog and the same Postgres server, to give region-replicator's figures a fixed point of
comparison. It handles only what the benchmark backlog contains (message.upserted events).

Prints one JSON object: {"events": n, "seconds": s, "events_per_s": r}, counted from the first
insert (connection and partition assignment excluded).
"""
import argparse
import json
import sys
import time

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--seconds", type=float, default=30.0, help="stop after this long (from the first insert)")
    ap.add_argument("--max-events", type=int, default=0, help="stop after this many events (0: no limit)")
    args = ap.parse_args()

    db = psycopg.connect(args.dsn, autocommit=True)
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": "naive-baseline",
                         "enable.auto.commit": False, "log_level": 3})
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in range(args.partitions)])
    sql = ("INSERT INTO messages (message_id, session_id, role, content, region, created_at, version) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (message_id) DO NOTHING")
    n = 0
    start = None
    idle_since = time.monotonic()
    with db.cursor() as cur:
        while True:
            msg = consumer.poll(0.5)
            now = time.monotonic()
            if msg is None or msg.error():
                if start is not None and now - idle_since > 5:
                    break  # the backlog is drained
                continue
            idle_since = now
            e = json.loads(msg.value())
            cur.execute(sql, (e["message_id"], e["session_id"], e["role"], e["content"],
                              e["origin_region"], e["created_at"], e["version"]))
            n += 1
            if start is None:
                start = time.monotonic()
            if now - start >= args.seconds or (args.max_events and n >= args.max_events):
                break
    elapsed = time.monotonic() - (start or time.monotonic())
    consumer.close()
    db.close()
    print(json.dumps({"events": n, "seconds": round(elapsed, 3),
                      "events_per_s": round(n / elapsed, 1) if elapsed > 0 else 0.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
