"""The article's RegionAwareDataLayer, completed: a reference producer for region-replicator.

Writes go to the local region's Postgres first, then the same change is published to Kafka as an
event of docs/events.md; region-replicator applies it to every other region. Requires
`psycopg` (3) and `confluent-kafka`.

With `captured=True` (the region runs region-replicator's capture, docs/operations.md) the layer
only writes locally: the publish step is gone, capture publishes every INSERT, UPDATE and DELETE
from the region's log, and a session is erased with `replicator_erase_session`.
"""
from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import datetime, timezone

import psycopg
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient


def utc_now_text() -> str:
    """`datetime.utcnow().isoformat()` as the article writes it, but always with six fraction
    digits (the canonical form: the id the database derives and the daemon's are then equal
    even when the microsecond is 0)."""
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")


def rfc3339(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class RegionAwareDataLayer:
    def __init__(self, local_region: str, regions_config: dict, kafka_config: dict, topic: str = "chat.messages",
                 captured: bool = False):
        self.local_region = local_region
        self.captured = captured
        self.config = regions_config
        self.topic = topic
        self.local_db = self._connect(regions_config[local_region]["db_primary"])
        self.local_replica = self._connect(regions_config[local_region]["db_replica"])
        # Idempotent producer: retries after a lost acknowledgement never write a record twice,
        # and records of one partition keep their order.
        self.replication_queue = None if captured else Producer(
            {**kafka_config, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
        self._errors: list[str] = []
        # session id → (partition, offset) of its last acknowledged write (`session_token`).
        self._last_write: dict[str, tuple[int, int]] = {}
        # captured: session id → the region's WAL position read after its last write's commit.
        self._last_captured: dict[str, str] = {}
        self._kafka_config = kafka_config
        self._token_scope: bytes | None = None

    @staticmethod
    def _connect(dsn: str) -> psycopg.Connection:
        # The trigger that derives message ids sees the stored instant: offset-less timestamps
        # must be read as UTC (docs/events.md, "The time-zone trap").
        return psycopg.connect(dsn, autocommit=False, options="-c TimeZone=UTC")

    # -- writes ---------------------------------------------------------------------------

    async def write_message(self, session_id: str, role: str, content: str, attributes: dict | None = None) -> str:
        """Write to local primary, replicate async. Unchanged from the article except that
        `attributes` is optional and the database's derived id is returned."""
        message = {
            "session_id": session_id,
            "role": role,
            "content": content,
            "region": self.local_region,
            "created_at": utc_now_text(),
        }
        if attributes is not None:
            message["attributes"] = attributes
        columns = [k for k in message if k != "attributes"]
        with self.local_db.cursor() as cur:
            cur.execute(
                f"INSERT INTO messages ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) RETURNING message_id",
                [message[k] for k in columns])
            message_id = str(cur.fetchone()[0])
        self.local_db.commit()
        await self._queue_replication(message)
        return message_id

    async def edit_message(self, message_id: str, content: str) -> int:
        """A new version of a message: version + 1, published as `message.upserted`."""
        with self.local_db.cursor() as cur:
            cur.execute(
                "UPDATE messages SET content = %s, version = version + 1, region = %s WHERE message_id = %s "
                "RETURNING session_id, role, created_at, version", [content, self.local_region, message_id])
            row = cur.fetchone()
        self.local_db.commit()
        if row is None:
            raise KeyError(message_id)
        session_id, role, created_at, version = row
        await self._queue_replication({
            "type": "message.upserted", "event_id": str(uuid.uuid4()), "message_id": message_id,
            "session_id": session_id, "role": role, "content": content, "origin_region": self.local_region,
            "created_at": rfc3339(created_at), "version": version,
        })
        return version

    async def delete_message(self, message_id: str) -> None:
        """A tombstone one version above the last one."""
        with self.local_db.cursor() as cur:
            cur.execute("DELETE FROM messages WHERE message_id = %s RETURNING session_id, version", [message_id])
            row = cur.fetchone()
        self.local_db.commit()
        if row is None:
            raise KeyError(message_id)
        session_id, version = row
        await self._queue_replication({
            "type": "message.deleted", "event_id": str(uuid.uuid4()), "message_id": message_id,
            "session_id": session_id, "origin_region": self.local_region,
            "occurred_at": rfc3339(datetime.now(timezone.utc)), "version": version + 1,
        })

    async def erase_session(self, session_id: str) -> None:
        """Erase a session: every message created up to now, in every region."""
        if self.captured:
            # One transaction: the rows, the session tombstone, and the message capture
            # publishes as `session.deleted` (a plain DELETE would be one tombstone per row).
            with self.local_db.cursor() as cur:
                cur.execute("SELECT replicator_erase_session(%s)", [session_id])
            self.local_db.commit()
            return
        occurred_at = datetime.now(timezone.utc)
        with self.local_db.cursor() as cur:
            cur.execute("DELETE FROM messages WHERE session_id = %s AND created_at <= %s", [session_id, occurred_at])
        self.local_db.commit()
        await self._queue_replication({
            "type": "session.deleted", "event_id": str(uuid.uuid4()), "session_id": session_id,
            "origin_region": self.local_region, "occurred_at": rfc3339(occurred_at),
        })

    # -- reads ----------------------------------------------------------------------------

    async def read_history(self, session_id: str) -> list:
        """Read from local replica for low latency."""
        with self.local_replica.cursor() as cur:
            cur.execute("SELECT * FROM messages WHERE session_id = %s ORDER BY created_at", [session_id])
            rows = cur.fetchall()
        self.local_replica.commit()
        return rows

    # -- replication ----------------------------------------------------------------------

    async def _queue_replication(self, message: dict):
        """Publish to the replication topic, keyed by session_id (one session, one partition)."""
        if self.captured:
            # Capture publishes the local write from the region's log. The session token is the
            # region's WAL position read after the commit (at or past the commit's).
            with self.local_db.cursor() as cur:
                cur.execute("SELECT pg_current_wal_lsn()::text")
                lsn = cur.fetchone()[0]
            self.local_db.commit()
            self._last_captured[message["session_id"]] = lsn
            return
        session_id = message["session_id"]

        def delivered(err, msg):
            if err is not None:
                self._errors.append(str(err))
            else:
                self._last_write[session_id] = (msg.partition(), msg.offset())
        while True:
            try:
                self.replication_queue.produce(self.topic, key=message["session_id"].encode(),
                                               value=json.dumps(message).encode(), on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                await asyncio.to_thread(self.replication_queue.poll, 0.1)
        self.replication_queue.poll(0)

    def _token(self, partition: int, offset: int) -> str:
        """The session token of an acknowledged write: base64url of version 1, FNV-1a 64 of
        "<cluster id>/<topic>", partition, offset (big-endian; docs/metrics.md, `/fresh`)."""
        if self._token_scope is None:
            client = self.replication_queue or AdminClient(self._kafka_config)
            cluster_id = client.list_topics(timeout=10).cluster_id or ""
            h = 0xcbf29ce484222325
            for b in f"{cluster_id}/{self.topic}".encode():
                h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
            self._token_scope = h.to_bytes(8, "big")
        raw = bytes([1]) + self._token_scope + partition.to_bytes(4, "big") + offset.to_bytes(8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def _capture_token(self, lsn: str) -> str:
        """The session token of a captured local write: base64url of version 2, the scope (as
        `_token`), the WAL position (8 bytes, big-endian) and the region's name (UTF-8)."""
        hi, lo = (int(x, 16) for x in lsn.split("/"))
        if self._token_scope is None:
            self._token(0, 0)  # computes the scope
        raw = bytes([2]) + self._token_scope + ((hi << 32) | lo).to_bytes(8, "big") + self.local_region.encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    async def session_token(self, session_id: str, timeout: float = 30.0) -> str | None:
        """Waits until the session's writes so far are acknowledged (acks=all) and returns the
        token of its last one (None: the session wrote nothing through this process)."""
        if self.captured:
            lsn = self._last_captured.get(session_id)
            return None if lsn is None else await asyncio.to_thread(self._capture_token, lsn)
        await self.flush(timeout)
        last = self._last_write.get(session_id)
        return None if last is None else await asyncio.to_thread(self._token, *last)

    async def flush(self, timeout: float = 30.0) -> None:
        """Waits until every published event is acknowledged; raises if any failed for good."""
        if self.replication_queue is None:
            return
        remaining = await asyncio.to_thread(self.replication_queue.flush, timeout)
        if remaining:
            raise KafkaException(f"{remaining} events not acknowledged after {timeout} s")
        if self._errors:
            raise KafkaException("events not delivered: " + "; ".join(self._errors[:5]))

    def close(self) -> None:
        if self.replication_queue is not None:
            self.replication_queue.flush(30)
        self.local_db.close()
        self.local_replica.close()


async def route_session(token: str | None, home: str, candidates: list[str], fresh_url: str,
                        home_up=lambda region: True, bound_ms: int = 300) -> tuple[str, bool]:
    """The article's routing with read-your-writes: serve a session from its `home` region
    while it is up; otherwise from the first of `candidates` whose `/fresh` answers 200 for the
    session's `token` within `bound_ms`. When none does, the first candidate is returned with
    `may_be_missing_recent_messages = True` (show it to the user). `fresh_url` is a daemon's HTTP
    endpoint, e.g. "http://127.0.0.1:9466" (any instance answers for every region).

    Returns (region, may_be_missing_recent_messages)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    if home_up(home):
        return home, False

    def ask(region: str) -> bool:
        query = {"region": region, "wait_ms": str(bound_ms)}
        if token:
            query["token"] = token
        try:
            with urllib.request.urlopen(f"{fresh_url}/fresh?{urllib.parse.urlencode(query)}",
                                        timeout=bound_ms / 1000 + 2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):  # 503 / 4xx / unreachable: not fresh
            return False

    others = [c for c in candidates if c != home]
    # Ask every candidate at once; the first (in preference order) that is fresh wins.
    answers = await asyncio.gather(*(asyncio.to_thread(ask, c) for c in others))
    for region, fresh in zip(others, answers):
        if fresh:
            return region, False
    return (others[0] if others else home), True
