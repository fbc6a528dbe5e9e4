"""streamgate's two consumer paths as a Python (grpc.aio) client takes them, shared by the
benchmarks: a Consume session that acks each frame on the stream, and the old default of a
Subscribe with one unary Ack call per message."""

import asyncio


class ConsumeSession:
    """A Consume session as `consumer` of group `g` (created from the start of `stream`):
    messages come in frames; `ack` sends one request for a frame's ids."""

    def __init__(self, pb, broker, stream, consumer="c", **open_options):
        self.pb, self.stream = pb, stream
        self.outgoing = asyncio.Queue()
        self.outgoing.put_nowait(pb.ConsumeRequest(open=pb.ConsumeOpen(
            streams=[pb.StreamStart(stream=stream)], group="g", consumer=consumer,
            create_group=True, group_start_id="0", **open_options)))
        self.responses = broker.Consume(self._requests())
        self.request_id = 0

    async def _requests(self):
        while (request := await self.outgoing.get()) is not None:
            yield request

    async def ack(self, messages):
        self.request_id += 1
        await self.outgoing.put(self.pb.ConsumeRequest(ack=self.pb.Settle(
            request_id=self.request_id, stream=self.stream, ids=[m.id for m in messages])))

    async def close(self):
        await self.outgoing.put(None)
        self.responses.cancel()


async def consume_each(pb, broker, stream, messages, on_first=None, **open_options):
    """Takes `messages` messages on Consume, acking each frame; returns when every ack is
    confirmed (and fails on any that did not take). `on_first` runs at the first frame."""
    session = ConsumeSession(pb, broker, stream, **open_options)
    confirmed = 0
    async for response in session.responses:
        kind = response.WhichOneof("event")
        if kind == "messages":
            if on_first is not None:
                on_first()
                on_first = None
            await session.ack(response.messages.messages)
        elif kind == "confirmation":
            assert not response.confirmation.failed, response.confirmation
            confirmed += len(response.confirmation.succeeded)
            if confirmed >= messages:
                break
    await session.close()


async def subscribe_one_ack_each(pb, broker, stream, messages, on_first=None):
    """The old default: one message per Subscribe item, one Ack call per message (64
    outstanding); returns once every Ack answered. `on_first` runs at the first message."""
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
    async for event in events:
        if event.WhichOneof("event") != "message":
            continue
        if on_first is not None:
            on_first()
            on_first = None
        received += 1
        await outstanding.acquire()
        acks.append(asyncio.create_task(ack(event.message.id)))
        if received == messages:
            break
    await asyncio.gather(*acks)
    events.cancel()
