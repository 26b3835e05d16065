"""Runs RegionAwareDataLayer in several regions at once: new messages, an edit, a deletion and a
session erasure from each region. Prints one JSON line: how many messages every region must
hold once region-replicator has applied everything.

    python demo.py --brokers HOST:PORT --topic chat.messages \
        --region us-east-1='host=... dbname=...' --region eu-west-1='...' [...] \
        [--fresh-url http://127.0.0.1:9466]

With --fresh-url (the daemon's HTTP endpoint), a session of the first region then moves: its
home is taken as down, `route_session` picks the first other region that is fresh for the
session's token, and the session's last message is read there.
"""
import argparse
import asyncio
import json

from region_aware_data_layer import RegionAwareDataLayer, route_session


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", default="chat.messages")
    parser.add_argument("--region", action="append", required=True, help="NAME=DSN")
    parser.add_argument("--captured", action="append", default=[],
                        help="NAME of a region whose writes region-replicator captures: no publishing there")
    parser.add_argument("--fresh-url", help="the daemon's HTTP endpoint: show a session moving region")
    args = parser.parse_args()
    regions = dict(r.split("=", 1) for r in args.region)
    config = {name: {"db_primary": dsn, "db_replica": dsn} for name, dsn in regions.items()}
    layers = {name: RegionAwareDataLayer(name, config, {"bootstrap.servers": args.brokers}, args.topic,
                                         captured=name in args.captured)
              for name in regions}
    live = 0
    for name, layer in layers.items():
        session = f"session-{name}"
        ids = [await layer.write_message(session, "user", f"question {i} from {name} «✓»") for i in range(3)]
        ids.append(await layer.write_message(session, "assistant", f"answer from {name}",
                                             attributes={"model": "example-1", "tokens": {"in": 12, "out": 40}}))
        await layer.edit_message(ids[0], f"question 0 from {name}, edited")
        await layer.edit_message(ids[0], f"question 0 from {name}, edited twice")
        await layer.delete_message(ids[1])
        live += 3
        # A session that is erased later, with a message created before the erasure.
        await layer.write_message(f"erase-me-{name}", "user", "to be forgotten")
    for name, layer in layers.items():
        await layer.erase_session(f"erase-me-{name}")
        history = await layer.read_history(f"session-{name}")
        assert len(history) == 3, history
    summary = {"expected_messages": live}
    if args.fresh_url:
        home = next(iter(layers))
        session = f"session-{home}"
        last = await layers[home].write_message(session, "user", "the last message before moving")
        live += 1
        token = await layers[home].session_token(session)
        region, may_be_missing = await route_session(token, home, list(layers), args.fresh_url,
                                                     home_up=lambda r: False, bound_ms=5000)
        seen = any(last in map(str, row) for row in await layers[region].read_history(session))
        print(f"session {session} moved {home} -> {region}: last message "
              f"{'seen' if seen else 'NOT seen'}{' (may be missing recent messages)' if may_be_missing else ''}")
        summary.update(expected_messages=live, moved_to=region, may_be_missing=may_be_missing, last_message_seen=seen,
                       token=token)
    for layer in layers.values():
        await layer.flush()
        layer.close()
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
