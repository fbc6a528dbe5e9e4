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
from paths import consume_each, subscribe_one_ack_each


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], check=True,
                          capture_output=True, text=True).stdout


async def produce(pb, broker, stream, messages):
    batch = 500
    for start in range(0, messages, batch):
        await broker.Produce(pb.ProduceRequest(stream=stream, messages=[
            pb.OutgoingMessage(fields=[pb.Field(name="n", value=str(i).encode())])
            for i in range(start, min(start + batch, messages))]))


def timed(path, **options):
    """A path measured from its first message to its last confirmed ack."""

    async def run(pb, broker, stream, messages):
        started = []
        await path(pb, broker, stream, messages,
                   on_first=lambda: started.append(time.perf_counter()), **options)
        return time.perf_counter() - started[0]

    return run


PATHS = [("Subscribe, one Ack call per message", timed(subscribe_one_ack_each)),
         ("Consume, one ack per frame on the stream",
          timed(consume_each, batch_size=100, max_messages_per_frame=100))]


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
