"""A streamgate client in Python: produce, subscribe as a consumer group member, ack.

Stubs are generated from the repository's proto/ with grpcio-tools at start-up (into a temporary
directory), so the example always matches the protos. Run against a broker:

    pip install -r examples/python/requirements.txt
    python examples/python/client.py 127.0.0.1:50051
"""

import importlib
import pathlib
import sys
import tempfile
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
    print("python example: ok")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051")
