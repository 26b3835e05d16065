"""The benchmark's workload (for bench.py): chat-message events, produced as a backlog or at a
paced rate, and a bare consumer that measures what the broker alone adds to their latency.
`produce_at_rate` and `broker_floor` run in child processes (`bench.py --produce-at-rate`,
`bench.py --broker-floor`) and print one JSON object."""
import datetime as dt
import json
import random
import time
import uuid

from confluent_kafka import Producer

from world import ORIGIN, TOPIC, log, utc_now_text

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

