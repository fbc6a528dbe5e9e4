"""The fast way to publish from Python: one future per message, many messages per Produce call.

A gRPC call costs a Python client ~55 µs of CPU whatever it carries, so a producer that sends one
message per unary Produce is capped by its own CPU near 18,000 msg/s. `BatchingPublisher` gives
the application the simple interface it wants (`publish(...)` returns a future of the message's
id, as Google's Pub/Sub client does) and sends what was published while its calls were busy as
one Produce: concurrent senders share calls without knowing of each other, and an idle publisher
sends at once.

    publisher = BatchingPublisher(pb, broker, "orders")
    ids = await asyncio.gather(*(publisher.publish([("n", str(i).encode())]) for i in range(1000)))
    await publisher.close()

A batch is appended in one pipelined round trip and is not atomic (see Produce): if it fails,
every future of that batch gets the error, and some of its messages may have been stored.
"""

import asyncio


class BatchingPublisher:
    """Coalesces concurrent `publish` calls to one stream into Produce calls of up to
    `max_messages`, with at most `max_calls` Produce calls in flight.

    With `max_delay` 0 (the default) a message is sent at the next turn of the event loop,
    together with whatever else was published in that turn; when `max_calls` calls are in
    flight, what is published meanwhile waits and leaves in one call as soon as one returns.
    An idle publisher adds no delay and a busy one sends big batches, as a database's group
    commit does. A `max_delay` above 0 holds each batch open that long (Google's Pub/Sub
    clients hold 10 ms) for bigger batches at low rates."""

    def __init__(self, pb, broker, stream, max_messages=500, max_delay=0.0, max_calls=4):
        self.pb, self.broker, self.stream = pb, broker, stream
        self.max_messages, self.max_delay, self.max_calls = max_messages, max_delay, max_calls
        self.pending = []  # (message, future)
        self.timer = None
        self.in_flight = set()

    def publish(self, fields):
        """Queues one message (a list of (name, bytes) pairs); the future resolves to its id."""
        future = asyncio.get_running_loop().create_future()
        message = self.pb.OutgoingMessage(
            fields=[self.pb.Field(name=name, value=value) for name, value in fields])
        self.pending.append((message, future))
        if len(self.pending) >= self.max_messages:
            self._flush()
        elif self.timer is None:
            loop = asyncio.get_running_loop()
            self.timer = (loop.call_later(self.max_delay, self._flush) if self.max_delay > 0
                          else loop.call_soon(self._flush))
        return future

    def _flush(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # Every slot taken: the next call to return sends what waits.
        while self.pending and len(self.in_flight) < self.max_calls:
            batch = self.pending[:self.max_messages]
            self.pending = self.pending[self.max_messages:]
            task = asyncio.ensure_future(self._send(batch))
            self.in_flight.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task):
        self.in_flight.discard(task)
        if self.pending:
            self._flush()

    async def _send(self, batch):
        try:
            reply = await self.broker.Produce(self.pb.ProduceRequest(
                stream=self.stream, messages=[message for message, _ in batch]))
        except Exception as err:  # every message of the batch shares its fate
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, future), message_id in zip(batch, reply.ids):
            if not future.done():
                future.set_result(message_id)

    async def close(self):
        """Sends what is queued and waits for every call in flight."""
        self._flush()
        while self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)


async def demo(address):
    """Publishes 1,000 messages from 10 tasks and checks every id came back."""
    import grpc
    from client import load_stubs

    pb, rpc = load_stubs()
    async with grpc.aio.insecure_channel(address) as channel:
        broker = rpc.BrokerStub(channel)
        publisher = BatchingPublisher(pb, broker, "py-fast-publisher")

        async def sender(task):
            return await asyncio.gather(*(
                publisher.publish([("task", str(task).encode()), ("n", str(i).encode())])
                for i in range(100)))

        ids = [i for task_ids in await asyncio.gather(*(sender(t) for t in range(10)))
               for i in task_ids]
        await publisher.close()
        assert len(set(ids)) == 1000, len(set(ids))
        print(f"published 1000 messages from 10 tasks in batches; ids {ids[0]} … {ids[-1]}")


if __name__ == "__main__":
    import sys

    asyncio.run(demo(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"))
