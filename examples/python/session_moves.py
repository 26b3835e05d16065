"""The article's failover story, with read-your-writes, step by step (scripts/demo runs it).

A session writes in its home region (the first --region): the article's write_message, a local
INSERT then a publish with acks=all. Its home region then goes down (--take-home-down runs a
command that stops it; without it the home is only taken as down). `route_session` asks the
daemon's `/fresh` of the other regions for the session's token and serves the session from the
first that holds its last write; the session's history is read there.

    python session_moves.py --brokers HOST:PORT --topic chat.messages --fresh-url http://127.0.0.1:9466 \
        --region us-east-1='host=... dbname=...' --region eu-west-1='...' [...] [--take-home-down 'COMMAND']

Prints the story, then one JSON line; exits 1 when the chosen region lacks the last message.
"""
import argparse
import asyncio
import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import psycopg

from region_aware_data_layer import RegionAwareDataLayer, route_session


def ask_fresh(fresh_url: str, region: str, token: str, wait_ms: int) -> tuple[int, dict]:
    query = urllib.parse.urlencode({"region": region, "token": token, "wait_ms": wait_ms})
    try:
        with urllib.request.urlopen(f"{fresh_url}/fresh?{query}", timeout=wait_ms / 1000 + 5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def home_up(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", default="chat.messages")
    parser.add_argument("--region", action="append", required=True, help="NAME=DSN (the first is the session's home)")
    parser.add_argument("--fresh-url", required=True, help="the daemon's HTTP endpoint")
    parser.add_argument("--take-home-down", help="a shell command that stops the home region's database")
    args = parser.parse_args()
    regions = dict(r.split("=", 1) for r in args.region)
    names = list(regions)
    home = names[0]
    config = {name: {"db_primary": dsn, "db_replica": dsn} for name, dsn in regions.items()}
    kafka = {"bootstrap.servers": args.brokers}

    session = f"traveller-{uuid.uuid4().hex[:8]}"
    lines = [("user", "I fly from New York to Singapore tonight."),
             ("assistant", "Noted: JFK to SIN tonight. Anything else?"),
             ("user", "Yes: book me the window seat, please.")]
    layer = RegionAwareDataLayer(home, config, kafka, args.topic)
    print(f"1. session {session} writes in its home region {home} (local INSERT, then publish with acks=all):")
    for role, content in lines:
        await layer.write_message(session, role, content)
        print(f"     {role:9} {content}")
    token = await layer.session_token(session)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    print(f"   its session token (the last write, acknowledged): {token}"
          f" = partition {int.from_bytes(raw[9:13], 'big')}, offset {int.from_bytes(raw[13:21], 'big')}")
    layer.close()

    if args.take_home_down:
        print(f"2. {home} goes down (--take-home-down: its database is stopped)")
        subprocess.run(args.take_home_down, shell=True, check=True)
    else:
        print(f"2. the session moves away from {home} (taken as down)")
    up = home_up(regions[home]) if args.take_home_down else False
    print(f"   {home} answers: {'yes' if up else 'no'}")

    print("3. the router asks /fresh of the other regions for the session's token:")
    for region in names[1:]:
        status, body = ask_fresh(args.fresh_url, region, token, 5000)
        verdict = "fresh: it holds the session's last write" if status == 200 else f"not fresh ({body.get('reason')})"
        print(f"     GET /fresh?region={region}&token=…&wait_ms=5000 -> {status}, {verdict}, waited {body.get('waited_ms')} ms")
    t0 = time.monotonic()
    chosen, may_be_missing = await route_session(token, home, names, args.fresh_url,
                                                 home_up=lambda r: up, bound_ms=5000)
    print(f"   route_session -> {chosen}{' (may be missing recent messages)' if may_be_missing else ''}"
          f" in {(time.monotonic() - t0) * 1000:.0f} ms")

    # The article's read_history query, in the chosen region.
    with psycopg.connect(regions[chosen], options="-c TimeZone=UTC") as c:
        history = c.execute("SELECT role, content FROM messages WHERE session_id = %s ORDER BY created_at",
                            [session]).fetchall()
    print(f"4. {chosen} serves the session; its history there:")
    for role, content in history:
        print(f"     {role:9} {content}")
    contents = [content for _, content in history]
    seen = bool(contents) and contents[-1] == lines[-1][1]
    print(f"   the last message is {'there' if seen else 'MISSING'}")
    print(json.dumps({"session": session, "home": home, "moved_to": chosen, "may_be_missing": may_be_missing,
                      "last_message_seen": seen, "token": token}))
    return 0 if seen and not may_be_missing else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
