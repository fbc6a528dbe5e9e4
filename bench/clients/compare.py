"""streamgate beside NATS JetStream and RabbitMQ, driven from Python asyncio clients.

Starts its own redis-server (no persistence) and streamgate, nats-server with JetStream file
storage, and rabbitmq-server (quorum queues), all on free loopback ports, and runs the same
workloads against each: the systems interleaved in every round, medians over the rounds, and the
CPU each process spent per message (client, server, Redis) read from /proc.

    bench/clients/run.sh target/release/streamgate [--messages 20000] [--runs 3]

Workloads (100-byte messages):
- publish, 50 tasks each awaiting its ack, one message per call: streamgate unary Produce,
  NATS `js.publish`, RabbitMQ publish with a publisher confirm per message;
- publish, one future per message, 50 tasks each awaiting all of its futures at the end, the
  fast way of each client: streamgate through `examples/python/publisher.py` (concurrent
  publishes coalesced into Produce calls), NATS `js.publish_async`, RabbitMQ publishes with
  their confirms gathered;
- consume + ack of a pre-filled queue, 1 consumer, the application acking each message:
  streamgate Consume (acks travel per frame on the stream), NATS pull consumer fetching 100 and
  acking each, RabbitMQ consumer with prefetch 200 acking each; and, for reference, streamgate's
  old default path: Subscribe with one unary Ack call per message;
- the same with 4 consumer processes (`consumer_process.py`) sharing the queue, its rate from the
  first message taken to the last ack, each process's CPU for that span;
- from Node (@grpc/grpc-js, `node_client.js`), streamgate's two default paths: unary Produce
  from 50 concurrent senders, and consume + ack on Consume;
- end-to-end latency at 2,000 and 5,000 msg/s: one message per publish call (not awaited before
  the next; streamgate's through `examples/python/publisher.py`, which sends at once when idle),
  stamped with its send time, received by a consumer acking each (streamgate on Consume, NATS
  push consumer, RabbitMQ consumer), p50 and p99 of send → receipt.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

import aio_pika
import grpc
import nats

from common import ROOT, Servers, cpu_seconds, free_port, load_stubs, wait_for_port
from paths import ConsumeSession, consume_each, subscribe_one_ack_each

sys.path.insert(0, str(ROOT / "examples" / "python"))
from publisher import BatchingPublisher  # noqa: E402  (the example is what we measure)

PAYLOAD = b"x" * 100


class Streamgate:
    name = "streamgate"
    kind = "streamgate"

    def __init__(self, servers, binary):
        self.pb, self.rpc = load_stubs()
        redis_port, redis = servers.redis()
        port, broker = servers.streamgate(binary, redis_port)
        self.address = self.endpoint = f"127.0.0.1:{port}"
        self.processes = {"server": broker.pid, "redis": redis.pid}
        self.round = 0
        self.publishers = {}

    async def connect(self):
        self.channel = grpc.aio.insecure_channel(self.address)
        self.broker = self.rpc.BrokerStub(self.channel)

    async def close(self):
        await self.channel.close()

    def fresh(self):
        self.round += 1
        return f"bench-{self.round}"

    async def publish_each(self, stream, messages, tasks):
        pb = self.pb
        request = pb.ProduceRequest(stream=stream, messages=[
            pb.OutgoingMessage(fields=[pb.Field(name="body", value=PAYLOAD)])])
        await fan_out(messages, tasks, lambda: self.broker.Produce(request))

    async def prepare(self, stream):
        return stream

    async def publish_futures(self, stream, messages, tasks):
        publisher = BatchingPublisher(self.pb, self.broker, stream)
        await futures_from(messages, tasks, lambda: publisher.publish([("body", PAYLOAD)]))
        await publisher.close()

    async def prefill(self, stream, messages):
        await self.prefill_field(stream, messages, "body")

    async def prefill_field(self, stream, messages, field):
        """`messages` entries of one `field` holding the payload, 500 per Produce."""
        pb = self.pb
        batch = pb.ProduceRequest(stream=stream, messages=[
            pb.OutgoingMessage(fields=[pb.Field(name=field, value=PAYLOAD)])] * 500)
        for _ in range(messages // 500):
            await self.broker.Produce(batch)

    async def consume_each(self, stream, messages):
        """Consume: the application acks each message; the acks of a frame travel together."""
        await consume_each(self.pb, self.broker, stream, messages)

    async def send(self, stream, payload):
        """One message through the documented publisher (sent at once when idle; what is
        published while its calls are busy travels together)."""
        publisher = self.publishers.get(stream)
        if publisher is None:
            publisher = self.publishers[stream] = BatchingPublisher(self.pb, self.broker, stream)
        await publisher.publish([("body", payload)])

    async def follow(self, stream, on_message):
        """A Consume session handing every message to `on_message`; returns its stop."""
        session = ConsumeSession(self.pb, self.broker, stream)
        started = asyncio.get_running_loop().create_future()

        async def read():
            async for response in session.responses:
                kind = response.WhichOneof("event")
                if kind == "started":
                    started.set_result(None)
                elif kind == "messages":
                    for message in response.messages.messages:
                        on_message(message.fields[0].value)
                    await session.ack(response.messages.messages)

        reader = asyncio.ensure_future(read())
        await started

        async def stop():
            await session.close()
            reader.cancel()

        return stop

    async def node(self, workload, stream, messages):
        """The same workload from Node (@grpc/grpc-js): (msg/s, the client's CPU per message)."""
        process = await asyncio.create_subprocess_exec(
            "node", str(ROOT / "bench" / "clients" / "node_client.js"), self.address, workload,
            stream, str(messages), stdout=asyncio.subprocess.PIPE)
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"the Node client failed ({process.returncode})")
        result = json.loads(out)
        return result["rate"], result["cpu_us"]

    async def consume_unary_acks(self, stream, messages):
        """The old default: one message per Subscribe item, one Ack call per message."""
        await subscribe_one_ack_each(self.pb, self.broker, stream, messages)


class Jetstream:
    name = "NATS JetStream"
    kind = "nats"

    def __init__(self, servers):
        port = free_port()
        store = os.path.join(servers.work, "jetstream")
        server = servers.start(["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js",
                                "-sd", store])
        wait_for_port(port, "nats-server")
        self.url = self.endpoint = f"nats://127.0.0.1:{port}"
        self.processes = {"server": server.pid}
        self.round = 0

    async def connect(self):
        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()

    async def close(self):
        await self.nc.close()

    def fresh(self):
        self.round += 1
        return f"bench{self.round}"

    async def stream(self, name):
        await self.js.add_stream(name=name, subjects=[f"{name}.>"], storage="file")
        return f"{name}.x"

    async def prepare(self, name):
        return await self.stream(name)

    async def publish_each(self, name, messages, tasks):
        subject = await self.stream(name)
        await fan_out(messages, tasks, lambda: self.js.publish(subject, PAYLOAD))

    async def publish_futures(self, name, messages, tasks):
        subject = await self.stream(name)

        async def send():
            return await self.js.publish_async(subject, PAYLOAD)

        await futures_from(messages, tasks, send, awaited=True)

    async def prefill(self, name, messages):
        subject = await self.stream(name)
        for start in range(0, messages, 500):
            await asyncio.gather(*(self.js.publish(subject, PAYLOAD) for _ in range(500)))
        return subject

    async def send(self, subject, payload):
        await self.js.publish(subject, payload)

    async def follow(self, name, on_message):
        """A push consumer acking each message; returns its stop. Sends go to the subject it
        returns through `name`'s stream."""

        async def handle(message):
            on_message(message.data)
            await message.ack()

        subscription = await self.js.subscribe(f"{name}.x", durable="lat", manual_ack=True,
                                               cb=handle, stream=name)
        return subscription.unsubscribe

    async def consume_each(self, name, messages):
        subscription = await self.js.pull_subscribe(f"{name}.x", durable="c", stream=name)
        received = 0
        while received < messages:
            for message in await subscription.fetch(100, timeout=10):
                await message.ack()
                received += 1


class Rabbit:
    name = "RabbitMQ"
    kind = "rabbitmq"

    def __init__(self, servers):
        port, dist = free_port(), free_port()
        base = os.path.join(servers.work, "rabbitmq")
        os.makedirs(base)
        plugins = os.path.join(base, "enabled_plugins")
        with open(plugins, "w") as f:
            f.write("[].")
        env = dict(os.environ, HOME=base, RABBITMQ_NODENAME=f"bench{port}@localhost",
                   RABBITMQ_NODE_PORT=str(port), RABBITMQ_DIST_PORT=str(dist),
                   RABBITMQ_MNESIA_BASE=os.path.join(base, "mnesia"),
                   RABBITMQ_LOG_BASE=os.path.join(base, "log"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=plugins,
                   RABBITMQ_CONFIG_FILE=os.path.join(base, "rabbitmq"),
                   RABBITMQ_PID_FILE=os.path.join(base, "pid"))
        server = servers.start(["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=env)
        wait_for_port(port, "rabbitmq-server", seconds=120)
        self.url = self.endpoint = f"amqp://guest:guest@127.0.0.1:{port}/"
        self.processes = {"server": beam_of(server.pid)}
        self.round = 0

    async def connect(self):
        self.connection = await aio_pika.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        await self.channel.set_qos(prefetch_count=200)

    async def close(self):
        await self.connection.close()

    def fresh(self):
        self.round += 1
        return f"bench{self.round}"

    async def queue(self, name):
        return await self.channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"})

    async def prepare(self, name):
        await self.queue(name)
        return name

    async def publish_each(self, name, messages, tasks):
        await self.queue(name)
        exchange = self.channel.default_exchange
        await fan_out(messages, tasks,
                      lambda: exchange.publish(aio_pika.Message(PAYLOAD), routing_key=name))

    async def publish_futures(self, name, messages, tasks):
        await self.queue(name)
        exchange = self.channel.default_exchange
        await futures_from(messages, tasks, lambda: asyncio.ensure_future(
            exchange.publish(aio_pika.Message(PAYLOAD), routing_key=name)))

    async def prefill(self, name, messages):
        await self.queue(name)
        exchange = self.channel.default_exchange
        for start in range(0, messages, 500):
            await asyncio.gather(*(exchange.publish(aio_pika.Message(PAYLOAD), routing_key=name)
                                   for _ in range(500)))

    async def send(self, name, payload):
        await self.channel.default_exchange.publish(aio_pika.Message(payload), routing_key=name)

    async def follow(self, name, on_message):
        """A consumer acking each message; returns its stop."""
        queue = await self.queue(name)

        async def handle(message):
            on_message(message.body)
            await message.ack()

        tag = await queue.consume(handle)
        return lambda: queue.cancel(tag)

    async def consume_each(self, name, messages):
        queue = await self.queue(name)
        received = 0
        async with queue.iterator() as iterator:
            async for message in iterator:
                await message.ack()
                received += 1
                if received >= messages:
                    break


def beam_of(pid):
    """The Erlang VM under rabbitmq-server's wrapper scripts: the process whose CPU counts."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    is_vm = b"beam.smp" in f.read()
                if is_vm and descends_from(int(child), pid):
                    return int(child)
            except OSError:
                continue
        time.sleep(0.2)
    return pid


def descends_from(pid, ancestor):
    while pid > 1:
        if pid == ancestor:
            return True
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    return False


async def fan_out(messages, tasks, call):
    """`messages` calls from `tasks` concurrent tasks, each awaiting its answer."""
    left = messages

    async def worker():
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    await asyncio.gather(*(worker() for _ in range(tasks)))


async def futures_from(messages, tasks, publish, awaited=False):
    """`messages` publishes from `tasks` tasks, each taking a future per message and awaiting
    all of its own at the end; `awaited`: `publish` is a coroutine that returns the future."""
    share = messages // tasks

    async def worker():
        futures = []
        for _ in range(share):
            futures.append(await publish() if awaited else publish())
        await asyncio.gather(*futures)

    await asyncio.gather(*(worker() for _ in range(tasks)))


async def latency(system, rate, seconds):
    """Messages sent at `rate` for `seconds`, each stamped with its send time, received by a
    consumer that acks each: (achieved rate, p50 ms, p99 ms) of send → receipt, the first tenth
    left out as warm-up."""
    name = system.fresh()
    target = await system.prepare(name)
    received = []

    def on_message(payload):
        received.append(time.perf_counter_ns() - int.from_bytes(payload[:8], "big"))

    stop = await system.follow(name, on_message)
    total = int(rate * seconds)
    sent, in_flight = 0, set()
    started = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            payload = time.perf_counter_ns().to_bytes(8, "big") + PAYLOAD[8:]
            task = asyncio.ensure_future(system.send(target, payload))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*in_flight)
    achieved = total / (time.perf_counter() - started)
    deadline = time.perf_counter() + 10
    while len(received) < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    await stop()
    samples = sorted(received[total // 10:])
    if not samples:
        return achieved, float("nan"), float("nan")
    quantile = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] / 1e6
    return achieved, quantile(0.5), quantile(0.99)


async def measure(system, workload, messages):
    """Runs one workload; returns (msg/s, µs of CPU per message for each process)."""
    name = system.fresh()
    if "consume" in workload:
        await system.prefill(name, messages)
    pids = dict(system.processes, client=os.getpid())
    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    started = time.perf_counter()
    node = None
    if workload.startswith("node-"):
        # Node's own clock and CPU: its start-up is not the workload's.
        node = await system.node(workload[len("node-"):], name, messages)
    elif workload == "consume-4":
        return await consumer_processes(system, name, messages, 4, pids, before)
    elif workload == "publish":
        await system.publish_each(name, messages, 50)
    elif workload == "publish-futures":
        await system.publish_futures(name, messages, 50)
    elif workload == "consume":
        await system.consume_each(name, messages)
    else:
        await system.consume_unary_acks(name, messages)
    elapsed = time.perf_counter() - started
    cpu = {role: (cpu_seconds(pid) - before[role]) * 1e6 / messages for role, pid in pids.items()}
    if node is not None:
        cpu["client"] = node[1]
        return node[0], cpu
    return messages / elapsed, cpu


async def consumer_processes(system, name, messages, count, pids, before):
    """`count` consumer processes (consumer_process.py) draining `name` together: the rate
    from the first message any of them took to the last ack, the clients' CPU as they report
    it for that span, the servers' from /proc."""
    script = str(ROOT / "bench" / "clients" / "consumer_process.py")
    processes = [await asyncio.create_subprocess_exec(
        sys.executable, script, system.kind, system.endpoint, name, f"c{i}",
        stdout=asyncio.subprocess.PIPE) for i in range(count)]
    reports = []
    for process in processes:
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"a {system.name} consumer process failed ({process.returncode})")
        reports.append(json.loads(out))
    received = sum(r["received"] for r in reports)
    if received != messages:
        raise RuntimeError(f"{system.name}: {count} consumers took {received} of {messages}")
    took = [r for r in reports if r["first"] is not None]
    elapsed = max(r["last"] for r in took) - min(r["first"] for r in took)
    cpu = {role: (cpu_seconds(pid) - before[role]) * 1e6 / messages
           for role, pid in pids.items() if role != "client"}
    cpu["client"] = sum(r["cpu"] for r in reports) * 1e6 / messages
    return messages / elapsed, cpu


WORKLOADS = [
    ("publish", "publish, 50 tasks each awaiting its ack, 1 message per call"),
    ("publish-futures", "publish, one future per message, 50 tasks (each client's fast way)"),
    ("consume", "consume + ack each message, 1 consumer"),
    ("consume-4", "consume + ack each message, 4 consumer processes"),
    ("consume-unary", "consume, one unary Ack call per message (Subscribe; streamgate only)"),
    ("node-publish", "Node (@grpc/grpc-js): publish, 50 concurrent unary Produce of 1 (streamgate only)"),
    ("node-consume", "Node (@grpc/grpc-js): consume + ack each on Consume, 1 consumer (streamgate only)"),
]

#: Workloads only streamgate runs.
STREAMGATE_ONLY = ("consume-unary", "node-publish", "node-consume")


async def run(systems, messages, runs):
    results = {}
    for system in systems:
        await system.connect()
    for _ in range(runs):
        for workload, _ in WORKLOADS:
            for system in systems:
                if workload in STREAMGATE_ONLY and system.name != "streamgate":
                    continue
                results.setdefault((workload, system.name), []).append(
                    await measure(system, workload, messages))
        for rate in RATES:
            for system in systems:
                results.setdefault((f"latency-{rate}", system.name), []).append(
                    await latency(system, rate, LATENCY_SECONDS))
    for system in systems:
        await system.close()
    return results


RATES = [2000, 5000]

#: How long each latency measurement sends.
LATENCY_SECONDS = 3


def report_latency(names, results):
    print("\n| end-to-end, Produce/publish → delivery, consumer acking each | " +
          " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for rate in RATES:
        cells = []
        for name in names:
            runs_ = results[(f"latency-{rate}", name)]
            achieved = statistics.median(r[0] for r in runs_)
            p50 = statistics.median(r[1] for r in runs_)
            p99 = statistics.median(r[2] for r in runs_)
            cells.append(f"{p50:.2f} / {p99:.1f} ms at {achieved:,.0f}/s")
        print(f"| {rate:,} msg/s: p50 / p99 | " + " | ".join(cells) + " |")


def report(systems, results, messages, runs):
    names = [s.name for s in systems]
    print(f"\n{messages} messages of 100 B per measurement, median of {runs}, systems "
          "interleaved in each round; CPU in µs per message (client / server / Redis)\n")
    print("| workload | " + " | ".join(names) + " | streamgate vs NATS | streamgate vs RabbitMQ |")
    print("|---|" + "---:|" * len(names) + "---:|---:|")
    for workload, title in WORKLOADS:
        cells, rates = [], {}
        for name in names:
            runs_ = results.get((workload, name))
            if not runs_:
                cells.append("—")
                continue
            rate = statistics.median(r for r, _ in runs_)
            rates[name] = rate
            cpu = {role: statistics.median(c[role] for _, c in runs_) for role in runs_[0][1]}
            shown = lambda us: f"{us:.1f}" if us < 10 else f"{us:.0f}"
            parts = [shown(cpu["client"]), shown(cpu["server"])]
            if "redis" in cpu:
                parts.append(shown(cpu["redis"]))
            cells.append(f"{rate:,.0f}/s ({' / '.join(parts)} µs)")
        ratio = lambda other: (f"{rates['streamgate'] / rates[other]:.2f}"
                               if "streamgate" in rates and other in rates else "—")
        print(f"| {title} | " + " | ".join(cells) +
              f" | {ratio('NATS JetStream')} | {ratio('RabbitMQ')} |")
    report_latency(names, results)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("streamgate", help="the streamgate binary (a release build)")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=3.0,
                        help="how long each end-to-end latency measurement sends")
    parser.add_argument("--only", default="streamgate,nats,rabbitmq",
                        help="which systems, comma-separated")
    parser.add_argument("--workloads", default=",".join(w for w, _ in WORKLOADS),
                        help="which workloads, comma-separated (latency rows always run "
                             "unless --latency-seconds is 0)")
    args = parser.parse_args()
    wanted_workloads = args.workloads.split(",")
    WORKLOADS[:] = [w for w in WORKLOADS if w[0] in wanted_workloads]
    if args.latency_seconds == 0:
        RATES.clear()
    global LATENCY_SECONDS
    LATENCY_SECONDS = args.latency_seconds
    servers = Servers()
    try:
        wanted = args.only.split(",")
        systems = []
        if "streamgate" in wanted:
            systems.append(Streamgate(servers, args.streamgate))
        if "nats" in wanted:
            systems.append(Jetstream(servers))
        if "rabbitmq" in wanted:
            systems.append(Rabbit(servers))
        results = asyncio.run(run(systems, args.messages, args.runs))
        report(systems, results, args.messages, args.runs)
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
