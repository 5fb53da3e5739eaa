#!/usr/bin/env python3
"""Read one tenant's fhirstream events from NATS JetStream with nats-py.

    pip install nats-py
    eval "$(scripts/env.sh run)"; python3 examples/consume.py acme   # `make run`'s NATS, no auth
    NATS_URL=nats://analytics-acme:PASSWORD@nats.example:4222 python3 examples/consume.py acme

It uses the tenant's durable pull consumer `{tenant}_{consumer}` (created on
first use, filtered on `fhir.{tenant}.>`), connects with the tenant's inbox
prefix `_INBOX_{tenant}` (the only one the users of `fhirstream nats-auth`
may receive on), prints every resource event, shows a transaction once all
of its events have arrived, and acks after handling, so a restart resumes
where it stopped. Delivery is at least once: events seen again are skipped
by `event_id`.
"""

import argparse
import asyncio
import json
import os
from collections import OrderedDict

import nats
from nats.js.api import AckPolicy, ConsumerConfig


class Seen:
    """The most recent event ids, to drop redeliveries (bounded)."""

    def __init__(self, size=100_000):
        self.ids = OrderedDict()
        self.size = size

    def add(self, event_id):
        if event_id in self.ids:
            return False
        self.ids[event_id] = None
        if len(self.ids) > self.size:
            self.ids.popitem(last=False)
        return True


def describe(event, seq):
    commit = event["commit"]
    return (
        f"#{seq} {event['op']:6} {event['resource_type']}/{event['id']} v{event['version']}"
        f" at {event['at']} by {event['actor']['sub']}"
        f" (commit {commit['id'][:8]} {commit['index'] + 1}/{commit['count']})"
    )


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tenant")
    parser.add_argument("--consumer", default="analytics", help="consumer name without the tenant prefix")
    parser.add_argument("--stream", default=os.environ.get("FHIRSTREAM_STREAM", "FHIR"))
    parser.add_argument(
        "--url",
        default=os.environ.get("NATS_URL") or os.environ.get("FHIRSTREAM_NATS_URL") or "nats://127.0.0.1:4222",
    )
    parser.add_argument("--exit-when-idle", action="store_true", help="stop when no event came for 2 s")
    args = parser.parse_args()

    nc = await nats.connect(args.url, inbox_prefix=f"_INBOX_{args.tenant}")
    js = nc.jetstream()
    name = f"{args.tenant}_{args.consumer}"
    # Binds to the consumer if it exists, else creates it through the
    # filtered create API ($JS.API.CONSUMER.CREATE.{stream}.{name}.{filter}),
    # the only one a tenant user may call.
    sub = await js.pull_subscribe(
        f"fhir.{args.tenant}.>",
        durable=name,
        stream=args.stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
    )
    seen = Seen()
    open_commits = {}  # commit id -> events so far
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=2)
            except nats.errors.TimeoutError:
                if args.exit_when_idle:
                    break
                continue
            for msg in msgs:
                # Five-token subjects are identifier claims of conditional
                # writes, not resource events.
                if len(msg.subject.split(".")) != 4:
                    await msg.ack()
                    continue
                event = json.loads(msg.data)
                if not seen.add(event["event_id"]):
                    await msg.ack()  # a redelivery of an event already handled
                    continue
                seq = msg.metadata.sequence.stream
                commit = event["commit"]
                if commit["count"] == 1:
                    print(describe(event, seq))
                    await msg.ack()
                    continue
                # A transaction's events are consecutive in the stream: show
                # them, and ack them, once the last one is here, so a crash
                # in between makes the whole transaction come again.
                part = open_commits.setdefault(commit["id"], [])
                part.append((seq, event, msg))
                if commit["index"] + 1 == commit["count"]:
                    print(f"transaction {commit['id']} ({commit['count']} events):")
                    for s, e, m in open_commits.pop(commit["id"]):
                        print("  " + describe(e, s))
                        await m.ack()
    finally:
        # Acks are sent before closing; drain() can wait forever on a pull
        # subscription's leftover status messages (nats-py 2.16).
        await nc.flush()
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
