"""A streamgate client in Python: produce, subscribe as a consumer group member, ack; then a
consumer loop on the bidirectional Consume call that acks on the stream with confirmation; then
a message's life: a dedupe key, an expiry and a delayed delivery.

Stubs are generated from the repository's proto/ with grpcio-tools at start-up (into a temporary
directory), so the example always matches the protos. Run against a broker:

    pip install -r examples/python/requirements.txt
    python examples/python/client.py 127.0.0.1:50051
"""

import importlib
import pathlib
import queue
import sys
import tempfile
import time
import uuid

import grpc
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_stubs():
    out = tempfile.mkdtemp(prefix="streamgate-stubs-")
    include = str(pathlib.Path(protoc.__file__).parent / "_proto")
    protos = [str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto")]
    code = protoc.main(
        ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}",
         f"--grpc_python_out={out}", *protos]
    )
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    sys.path.insert(0, out)
    return (importlib.import_module("streamgate.v1.broker_pb2"),
            importlib.import_module("streamgate.v1.broker_pb2_grpc"))


def main(address):
    pb, rpc = load_stubs()
    stream = f"py-example-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(address) as channel:
        broker = rpc.BrokerStub(channel)

        produced = broker.Produce(pb.ProduceRequest(
            stream=stream,
            messages=[pb.OutgoingMessage(fields=[pb.Field(name="order", value=str(i).encode())])
                      for i in range(3)],
        ), timeout=10)
        print(f"produced {list(produced.ids)} to {stream}")

        events = broker.Subscribe(pb.SubscribeRequest(
            streams=[pb.StreamStart(stream=stream)], group="billing", consumer="py-1",
            create_group=True, group_start_id="0",
        ), timeout=30)
        started = next(events)
        assert started.started.consumer == "py-1", started
        received = []
        for event in events:
            if event.HasField("heartbeat"):
                continue  # keeps proxies from cutting a quiet stream
            message = event.message
            received.append(message.fields[0].value.decode())
            acked = broker.Ack(pb.AckRequest(stream=stream, group="billing", ids=[message.id]),
                               timeout=10)
            assert acked.acknowledged == 1, acked
            print(f"received and acked {message.id} order={received[-1]}")
            if len(received) == 3:
                events.cancel()
                break
        assert received == ["0", "1", "2"], received

        # Nothing left pending: a group member that acks what it gets leaves a clean group.
        fetched = broker.Fetch(pb.FetchRequest(
            streams=[pb.StreamStart(stream=stream, after_id="0")], group="billing",
            consumer="py-1",
        ), timeout=10)
        assert len(fetched.messages) == 0, fetched

        consume_with_confirmed_acks(pb, broker, f"{stream}-jobs")
        message_lifecycle(pb, broker, f"{stream}-life")
    print("python example: ok")


def message_lifecycle(pb, broker, stream):
    """A retried Produce with a dedupe key stores one message; a message with a ttl is not
    delivered once expired; a delayed one is appended when due (README, "Message lifecycle")."""
    def produce(**options):
        fields = options.pop("fields")
        return broker.Produce(pb.ProduceRequest(stream=stream, messages=[pb.OutgoingMessage(
            fields=[pb.Field(name=k, value=v.encode()) for k, v in fields.items()],
            **options.pop("message", {}))], **options), timeout=10)

    first = produce(fields={"kind": "payment"}, message={"dedupe_key": "payment-42"})
    retry = produce(fields={"kind": "payment"}, message={"dedupe_key": "payment-42"})
    assert list(first.ids) == list(retry.ids), (first, retry)
    produce(fields={"kind": "quote"}, message={"ttl_ms": 1})
    held = produce(fields={"kind": "reminder"}, delay_ms=300)
    assert len(held.delayed) == 1 and not held.ids, held
    time.sleep(0.6)
    fetched = broker.Fetch(pb.FetchRequest(
        streams=[pb.StreamStart(stream=stream)], group="life", consumer="py-3",
        create_group=True, group_start_id="0", count=10), timeout=10)
    kinds = [m.fields[0].value.decode() for m in fetched.messages]
    assert kinds == ["payment", "reminder"], kinds
    print(f"dedupe stored one payment, the expired quote was skipped, the reminder came: {kinds}")


def consume_with_confirmed_acks(pb, broker, stream):
    """The bidirectional Consume call: messages come several per frame, acks go back on the same
    stream, and the broker confirms which ids each ack applied to."""
    broker.Produce(pb.ProduceRequest(
        stream=stream,
        messages=[pb.OutgoingMessage(fields=[pb.Field(name="job", value=str(i).encode())])
                  for i in range(5)],
    ), timeout=10)
    outgoing = queue.Queue()
    outgoing.put(pb.ConsumeRequest(open=pb.ConsumeOpen(
        streams=[pb.StreamStart(stream=stream)], group="workers", consumer="py-2",
        create_group=True, group_start_id="0",
    )))

    def requests():
        while (request := outgoing.get()) is not None:
            yield request

    responses = broker.Consume(requests(), timeout=30)
    jobs, next_request = [], 1
    for response in responses:
        kind = response.WhichOneof("event")
        if kind == "messages":
            batch = response.messages.messages
            jobs += [m.fields[0].value.decode() for m in batch]
            # One ack for the whole frame, plus an id this consumer never held.
            ids = [m.id for m in batch] + (["1-0"] if next_request == 1 else [])
            outgoing.put(pb.ConsumeRequest(ack=pb.Settle(
                request_id=next_request, stream=stream, ids=ids)))
            next_request += 1
        elif kind == "confirmation":
            confirmation = response.confirmation
            print(f"ack {confirmation.request_id}: {len(confirmation.succeeded)} took, "
                  f"{[(f.id, pb.SettleFailureReason.Name(f.reason)) for f in confirmation.failed]} did not")
            if confirmation.request_id == 1:
                assert [f.id for f in confirmation.failed] == ["1-0"], confirmation
            if len(jobs) == 5 and confirmation.request_id == next_request - 1:
                outgoing.put(None)  # half-close: the broker ends the call with OK
    assert jobs == ["0", "1", "2", "3", "4"], jobs
    print("consumed 5 jobs over Consume, every ack confirmed")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051")
