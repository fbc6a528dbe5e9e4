"""One of several consumer processes draining a pre-filled queue together (compare.py's
"4 consumer processes" row): each takes what the system gives it, acking each message, until
nothing has arrived for IDLE seconds, then prints one JSON line for its parent:
{"received": n, "first": t, "last": t, "cpu": s}, times from the system-wide monotonic clock
(the first message and the last ack), `cpu` its own CPU seconds between them.

    python consumer_process.py streamgate|nats|rabbitmq <endpoint> <stream> <consumer name>
"""

import asyncio
import json
import sys
import time

#: How long a consumer waits for more before it decides the queue is drained.
IDLE = 1.0

#: How long a consumer waits for its first message once connected (the others may have
#: drained the queue before it connected).
FIRST = 5.0


class Tally:
    def __init__(self):
        self.received, self.first, self.last, self.cpu_at_first = 0, None, None, None
        self.started = time.monotonic()

    def connected(self):
        """Starts the wait for a first message."""
        self.started = time.monotonic()

    def took(self, count):
        if self.first is None:
            self.first, self.cpu_at_first = time.monotonic(), time.process_time()
        self.received += count
        self.last = time.monotonic()

    def wait(self):
        """How much longer to wait for a message: until IDLE after the last one (FIRST after
        the start before any); anything else arriving (heartbeats) does not extend it. At
        least a millisecond, so that a caller's timeout always fires."""
        until = self.started + FIRST if self.first is None else self.last + IDLE
        return max(0.001, until - time.monotonic())

    def report(self):
        cpu = time.process_time() - self.cpu_at_first if self.first is not None else 0.0
        print(json.dumps({"received": self.received, "first": self.first, "last": self.last,
                          "cpu": cpu}))


async def streamgate(address, stream, consumer, tally):
    import grpc
    from common import load_stubs
    from paths import ConsumeSession
    pb, rpc = load_stubs()
    async with grpc.aio.insecure_channel(address) as channel:
        session = ConsumeSession(pb, rpc.BrokerStub(channel), stream, consumer=consumer)
        responses = session.responses.__aiter__()
        tally.connected()
        while True:
            try:
                response = await asyncio.wait_for(responses.__anext__(), tally.wait())
            except asyncio.TimeoutError:
                break
            kind = response.WhichOneof("event")
            if kind == "messages":
                await session.ack(response.messages.messages)
            elif kind == "confirmation":
                assert not response.confirmation.failed, response.confirmation
                tally.took(len(response.confirmation.succeeded))
        await session.close()


async def nats_consumer(url, stream, _consumer, tally):
    import nats
    connection = await nats.connect(url)
    subscription = await connection.jetstream().pull_subscribe(
        f"{stream}.x", durable="c", stream=stream)
    tally.connected()
    while True:
        try:
            messages = await subscription.fetch(100, timeout=tally.wait())
        except (asyncio.TimeoutError, nats.errors.TimeoutError):
            break
        for message in messages:
            await message.ack()
        tally.took(len(messages))
    await connection.close()


async def rabbitmq(url, queue_name, _consumer, tally):
    import aio_pika
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=200)
    queue = await channel.declare_queue(queue_name, durable=True,
                                        arguments={"x-queue-type": "quorum"})
    async with queue.iterator() as iterator:
        messages = iterator.__aiter__()
        tally.connected()
        while True:
            try:
                message = await asyncio.wait_for(messages.__anext__(), tally.wait())
            except asyncio.TimeoutError:
                break
            await message.ack()
            tally.took(1)
    await connection.close()


CONSUMERS = {"streamgate": streamgate, "nats": nats_consumer, "rabbitmq": rabbitmq}


def main():
    system, endpoint, stream, consumer = sys.argv[1:5]
    tally = Tally()
    asyncio.run(CONSUMERS[system](endpoint, stream, consumer, tally))
    tally.report()


if __name__ == "__main__":
    main()
