"""A Python consumer's default path, measured: one group Subscribe, one unary Ack per message.

What a grpc.aio client does when it follows the API's defaults, and what it costs Redis. Starts
its own redis-server and the given streamgate binary on free loopback ports, produces N messages,
drains them with a group Subscribe while acking each one with its own Ack call (up to 64 acks
outstanding), and prints the rate and Redis's INFO commandstats for the run.

    .venv/bin/python scripts/bench_python_consumer.py target/release/streamgate [--messages 50000]

Stubs are generated from proto/ at start-up (grpcio-tools, as examples/python/client.py does).
"""

import argparse
import asyncio
import importlib
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_stubs():
    out = tempfile.mkdtemp(prefix="streamgate-stubs-")
    include = str(pathlib.Path(protoc.__file__).parent / "_proto")
    protos = [str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto")]
    code = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", *protos])
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    sys.path.insert(0, out)
    return (importlib.import_module("streamgate.v1.broker_pb2"),
            importlib.import_module("streamgate.v1.broker_pb2_grpc"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], check=True,
                          capture_output=True, text=True).stdout


async def run(pb, rpc, address, messages):
    async with grpc.aio.insecure_channel(address) as channel:
        broker = rpc.BrokerStub(channel)
        batch = 500
        for start in range(0, messages, batch):
            await broker.Produce(pb.ProduceRequest(stream="bench", messages=[
                pb.OutgoingMessage(fields=[pb.Field(name="n", value=str(i).encode())])
                for i in range(start, min(start + batch, messages))]))
        events = broker.Subscribe(pb.SubscribeRequest(
            streams=[pb.StreamStart(stream="bench")], group="g", consumer="c",
            create_group=True, group_start_id="0"))
        outstanding = asyncio.Semaphore(64)
        acks = []

        async def ack(message_id):
            try:
                await broker.Ack(pb.AckRequest(stream="bench", group="g", ids=[message_id]))
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
        return received, elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("streamgate", help="the streamgate binary to measure")
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    pb, rpc = load_stubs()
    redis_port, broker_port = free_port(), free_port()
    work = tempfile.mkdtemp(prefix="streamgate-bench-")
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", work],
                             stdout=subprocess.DEVNULL)
    broker = None
    try:
        for _ in range(100):
            try:
                if redis_cli(redis_port, "PING").strip() == "PONG":
                    break
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.05)
        broker = subprocess.Popen([args.streamgate, "serve", "--listen", f"127.0.0.1:{broker_port}",
                                   "--redis-url", f"redis://127.0.0.1:{redis_port}", "--log", "warn"],
                                  stderr=subprocess.DEVNULL)
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", broker_port)) == 0:
                    break
            time.sleep(0.05)
        redis_cli(redis_port, "CONFIG", "RESETSTAT")
        received, elapsed = asyncio.run(run(pb, rpc, f"127.0.0.1:{broker_port}", args.messages))
        print(f"{received} messages, one Ack call each: {received / elapsed:.0f} msg/s")
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
        if broker:
            broker.terminate()
            broker.wait()
        redis.terminate()
        redis.wait()


if __name__ == "__main__":
    main()
