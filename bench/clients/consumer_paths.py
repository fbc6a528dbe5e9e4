"""A Python consumer, measured on two paths: the old default (one group Subscribe, one message
per item, one unary Ack per message) and Consume (frames of up to 100 messages, one ack request
per frame on the same stream, every ack confirmed).

What a grpc.aio client gets from each, and what it costs Redis. Starts its own redis-server and
the given streamgate binary on free loopback ports; each round produces N messages per path and
drains them, the paths interleaved; prints the medians and Redis's INFO commandstats for the run.

    .venv/bin/python bench/clients/consumer_paths.py target/release/streamgate [--messages 50000] [--runs 3]

Stubs are generated from proto/ at start-up (grpcio-tools; see common.py).
"""

import argparse
import asyncio
import statistics
import subprocess
import time

import grpc

from common import Servers, load_stubs


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], check=True,
                          capture_output=True, text=True).stdout


async def produce(pb, broker, stream, messages):
    batch = 500
    for start in range(0, messages, batch):
        await broker.Produce(pb.ProduceRequest(stream=stream, messages=[
            pb.OutgoingMessage(fields=[pb.Field(name="n", value=str(i).encode())])
            for i in range(start, min(start + batch, messages))]))


async def subscribe_one_ack_each(pb, broker, stream, messages):
    """The old default: one message per Subscribe item, one Ack call per message (64 outstanding)."""
    events = broker.Subscribe(pb.SubscribeRequest(
        streams=[pb.StreamStart(stream=stream)], group="g", consumer="c",
        create_group=True, group_start_id="0"))
    outstanding = asyncio.Semaphore(64)
    acks = []

    async def ack(message_id):
        try:
            await broker.Ack(pb.AckRequest(stream=stream, group="g", ids=[message_id]))
        finally:
            outstanding.release()

    received = 0
    started = None
    async for event in events:
        if event.WhichOneof("event") != "message":
            continue
        started = started or time.perf_counter()
        received += 1
        await outstanding.acquire()
        acks.append(asyncio.create_task(ack(event.message.id)))
        if received == messages:
            break
    await asyncio.gather(*acks)
    elapsed = time.perf_counter() - started
    events.cancel()
    return elapsed


async def consume_acks_on_stream(pb, broker, stream, messages):
    """Consume: frames of up to 100 messages, one ack request per frame, all confirmed."""
    outgoing = asyncio.Queue()
    await outgoing.put(pb.ConsumeRequest(open=pb.ConsumeOpen(
        streams=[pb.StreamStart(stream=stream)], group="g", consumer="c",
        create_group=True, group_start_id="0", batch_size=100, max_messages_per_frame=100)))

    async def requests():
        while (request := await outgoing.get()) is not None:
            yield request

    session = broker.Consume(requests())
    confirmed, request_id, started = 0, 0, None
    async for response in session:
        kind = response.WhichOneof("event")
        if kind == "messages":
            started = started or time.perf_counter()
            request_id += 1
            await outgoing.put(pb.ConsumeRequest(ack=pb.Settle(
                request_id=request_id, stream=stream,
                ids=[m.id for m in response.messages.messages])))
        elif kind == "confirmation":
            assert not response.confirmation.failed, response.confirmation
            confirmed += len(response.confirmation.succeeded)
            if confirmed == messages:
                break
    elapsed = time.perf_counter() - started
    await outgoing.put(None)
    session.cancel()
    return elapsed


PATHS = [("Subscribe, one Ack call per message", subscribe_one_ack_each),
         ("Consume, one ack per frame on the stream", consume_acks_on_stream)]


async def run(pb, rpc, address, messages, runs):
    rates = {name: [] for name, _ in PATHS}
    async with grpc.aio.insecure_channel(address) as channel:
        broker = rpc.BrokerStub(channel)
        for round_ in range(runs):
            for i, (name, path) in enumerate(PATHS):
                stream = f"bench-{round_}-{i}"
                await produce(pb, broker, stream, messages)
                elapsed = await path(pb, broker, stream, messages)
                rates[name].append(messages / elapsed)
    return rates


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("streamgate", help="the streamgate binary to measure")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pb, rpc = load_stubs()
    servers = Servers()
    try:
        redis_port, _ = servers.redis()
        broker_port, _ = servers.streamgate(args.streamgate, redis_port)
        redis_cli(redis_port, "CONFIG", "RESETSTAT")
        rates = asyncio.run(run(pb, rpc, f"127.0.0.1:{broker_port}", args.messages, args.runs))
        medians = {name: statistics.median(values) for name, values in rates.items()}
        base = medians[PATHS[0][0]]
        print(f"{args.messages} messages per run, median of {args.runs}, paths interleaved")
        print("| path | msg/s (median) | runs | vs Subscribe + one Ack each |")
        print("|---|---:|---|---:|")
        for name, median in medians.items():
            runs = ", ".join(f"{r:.0f}" for r in rates[name])
            print(f"| {name} | {median:.0f} | {runs} | {median / base:.2f} |")
        print("\nRedis INFO commandstats, the whole run:")
        stats = redis_cli(redis_port, "INFO", "commandstats")
        rows = [line for line in stats.splitlines() if line.startswith("cmdstat_")]
        print("| command | calls | usec | usec per call |")
        print("|---|---:|---:|---:|")
        for row in sorted(rows):
            name, values = row.split(":", 1)
            fields = dict(kv.split("=") for kv in values.split(","))
            print(f"| {name[len('cmdstat_'):]} | {fields['calls']} | {fields['usec']} | "
                  f"{fields['usec_per_call']} |")
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
