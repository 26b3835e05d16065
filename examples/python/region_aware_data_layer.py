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
import json
import uuid
from datetime import datetime, timezone

import psycopg
from confluent_kafka import KafkaException, Producer


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
            return  # capture publishes the local write from the region's log
        def delivered(err, _msg):
            if err is not None:
                self._errors.append(str(err))
        while True:
            try:
                self.replication_queue.produce(self.topic, key=message["session_id"].encode(),
                                               value=json.dumps(message).encode(), on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                await asyncio.to_thread(self.replication_queue.poll, 0.1)
        self.replication_queue.poll(0)

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
