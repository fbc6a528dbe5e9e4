"""Google's official Python Pub/Sub client against streamgate, beside our own Python client on
the same broker, in the same run: what a team gets by pointing `google-cloud-pubsub` at
streamgate instead of using our stubs.

Starts its own redis-server and streamgate on free loopback ports; each round runs every row
once, interleaved; medians over the rounds, and the CPU per message of client, broker and Redis
read from /proc.

    bench/clients/run.sh --pubsub target/release/streamgate [--messages 20000] [--runs 3]

Rows (100-byte messages):
- publish: Pub/Sub `publisher.publish` futures (the client's default batching), all awaited at
  the end; ours: `examples/python/publisher.py` futures from 50 tasks (compare.py's row);
- consume + ack of a pre-filled subscription, 1 subscriber: Pub/Sub streaming pull with a
  callback acking each message (the client's default flow control and thread pool), timed to
  the last ack the broker applied; ours: Consume acking each frame (compare.py's row).
"""

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time

from common import Servers, cpu_seconds
from compare import PAYLOAD, Streamgate

PROJECT = "bench"


class PubsubClient:
    """The official client, pointed at the broker with PUBSUB_EMULATOR_HOST."""

    def __init__(self, address):
        os.environ["PUBSUB_EMULATOR_HOST"] = address
        from google.cloud import pubsub_v1  # after the variable: the clients read it once

        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.round = 0

    def fresh(self):
        self.round += 1
        topic = self.publisher.topic_path(PROJECT, f"topic-{self.round}")
        subscription = self.subscriber.subscription_path(PROJECT, f"subscription-{self.round}")
        self.publisher.create_topic(request={"name": topic})
        self.subscriber.create_subscription(request={"name": subscription, "topic": topic})
        return topic, subscription

    def publish(self, topic, messages):
        futures = [self.publisher.publish(topic, PAYLOAD) for _ in range(messages)]
        for future in futures:
            future.result(timeout=120)

    def consume(self, subscription, messages):
        """Streaming pull until `messages` acks were applied (ack_with_response resolves once
        the broker answered the ack)."""
        done = threading.Event()
        lock = threading.Lock()
        acked = [0]

        def settled(_):
            with lock:
                acked[0] += 1
                if acked[0] >= messages:
                    done.set()

        def take(message):
            message.ack_with_response().add_done_callback(settled)

        future = self.subscriber.subscribe(subscription, callback=take)
        finished = done.wait(timeout=300)
        future.cancel()
        if not finished:
            raise RuntimeError(f"only {acked[0]} of {messages} acks applied")


async def one_round(native, pubsub, messages, pids):
    """Every row once: {row: (msg/s, {process: µs CPU per message})}."""
    rows = {}

    async def timed(row, work):
        before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        started = time.perf_counter()
        await work()
        elapsed = time.perf_counter() - started
        rows[row] = (messages / elapsed, {
            role: (cpu_seconds(pid) - before[role]) * 1e6 / messages for role, pid in pids.items()})

    stream = native.fresh()
    await timed("publish: ours (publisher.py futures)",
                lambda: native.publish_futures(stream, messages, 50))
    topic, _ = pubsub.fresh()
    await timed("publish: Pub/Sub client (publish futures)",
                lambda: asyncio.to_thread(pubsub.publish, topic, messages))
    stream = native.fresh()
    await native.prefill(stream, messages)
    await timed("consume + ack: ours (Consume)", lambda: native.consume_each(stream, messages))
    topic, subscription = pubsub.fresh()
    # Plain entries are Pub/Sub messages: fill the topic's stream with our own Produce.
    stream_of_topic = topic.split("/")[1] + "/" + topic.split("/")[3]
    await native.prefill_field(stream_of_topic, messages, "data")
    await timed("consume + ack: Pub/Sub client (streaming pull)",
                lambda: asyncio.to_thread(pubsub.consume, subscription, messages))
    return rows


async def run(native, pubsub, messages, runs):
    await native.connect()
    pids = dict(native.processes, client=os.getpid())
    rounds = []
    for index in range(runs):
        rounds.append(await one_round(native, pubsub, messages, pids))
        print(f"round {index + 1}/{runs} done", file=sys.stderr)
    await native.close()
    return rounds


def report(rounds, messages, runs):
    print(f"\n{messages} messages of {len(PAYLOAD)} bytes per row, median of {runs} runs; "
          "CPU µs per message (client / broker / Redis)\n")
    print("| row | msg/s | ratio to ours | CPU client / broker / Redis |")
    print("|---|---:|---:|---|")
    ours = {}
    for row in rounds[0]:
        rate = statistics.median(r[row][0] for r in rounds)
        cpu = {role: statistics.median(r[row][1][role] for r in rounds)
               for role in ("client", "server", "redis")}
        kind = row.split(":")[0]
        if "ours" in row:
            ours[kind] = rate
        ratio = rate / ours[kind] if kind in ours else float("nan")
        print(f"| {row} | {rate:,.0f} | {ratio:.2f} | "
              f"{cpu['client']:.0f} / {cpu['server']:.0f} / {cpu['redis']:.0f} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("streamgate", help="the streamgate binary (a release build)")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    servers = Servers()
    try:
        native = Streamgate(servers, args.streamgate)
        pubsub = PubsubClient(native.address)
        rounds = asyncio.run(run(native, pubsub, args.messages, args.runs))
        report(rounds, args.messages, args.runs)
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
