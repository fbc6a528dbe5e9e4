"""A produce -> subscribe -> ack round trip from Python, with no .proto files and no generated stubs.

Like grpcurl, it learns the services and message types from the server's reflection service, then
builds requests from JSON. Usage: reflection_roundtrip.py HOST:PORT. Exits non-zero on any failure.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(address: str) -> None:
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    for expected in ("streamgate.v1.Broker", "streamgate.v1.Admin", "grpc.health.v1.Health"):
        assert expected in services, f"{expected} not listed by reflection: {sorted(services)}"
    pool = descriptor_pool.DescriptorPool(database)

    def call(service: str, method: str, request: dict, streaming: bool = False):
        descriptor = pool.FindServiceByName(service).FindMethodByName(method)
        request_type = message_factory.GetMessageClass(descriptor.input_type)
        response_type = message_factory.GetMessageClass(descriptor.output_type)
        make = channel.unary_stream if streaming else channel.unary_unary
        stub = make(
            f"/{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        return stub(json_format.ParseDict(request, request_type()), timeout=10)

    def as_dict(message) -> dict:
        return json_format.MessageToDict(message)

    # Field values are bytes: JSON carries them base64-encoded, exactly as in grpcurl.
    produced = as_dict(
        call(
            "streamgate.v1.Broker",
            "Produce",
            {"stream": "py-orders", "messages": [{"fields": [{"name": "sku", "value": "YWJj"}]}]},
        )
    )
    [message_id] = produced["ids"]

    events = call(
        "streamgate.v1.Broker",
        "Subscribe",
        {
            "streams": [{"stream": "py-orders"}],
            "group": "py-workers",
            "createGroup": True,
            "groupStartId": "0",
        },
        streaming=True,
    )
    started = as_dict(next(events))
    consumer = started["started"]["consumer"]
    delivered = as_dict(next(events))["message"]
    events.cancel()
    assert delivered["id"] == message_id, delivered
    assert delivered["fields"] == [{"name": "sku", "value": "YWJj"}], delivered
    assert delivered["deliveryCount"] == "1", delivered

    pending = as_dict(
        call("streamgate.v1.Admin", "ListPending", {"stream": "py-orders", "group": "py-workers"})
    )
    # Still pending: held by the consumer, or already handed back to the group (to the
    # `streamgate:parked` consumer) because the subscription ended.
    [entry] = pending["entries"]
    assert entry["id"] == message_id and entry["consumer"] in (consumer, "streamgate:parked"), pending

    acked = as_dict(
        call(
            "streamgate.v1.Broker",
            "Ack",
            {"stream": "py-orders", "group": "py-workers", "ids": [message_id]},
        )
    )
    assert acked == {"acknowledged": "1"}, acked

    pending = as_dict(
        call("streamgate.v1.Admin", "ListPending", {"stream": "py-orders", "group": "py-workers"})
    )
    assert pending.get("entries", []) == [], pending

    # Fetch, with the JSON of README's fetch-process-ack loop.
    produced = as_dict(
        call(
            "streamgate.v1.Broker",
            "Produce",
            {"stream": "py-orders", "messages": [{"fields": [{"name": "sku", "value": "eHl6"}]}]},
        )
    )
    batch = as_dict(
        call(
            "streamgate.v1.Broker",
            "Fetch",
            {
                "streams": [{"stream": "py-orders"}],
                "group": "py-workers",
                "consumer": "cron-1",
                "createGroup": True,
                "count": 50,
                "waitMs": 1000,
            },
        )
    )
    ids = [m["id"] for m in batch.get("messages", [])]
    assert ids == produced["ids"], batch
    assert batch["next"] == [{"stream": "py-orders", "afterId": ">"}], batch
    acked = as_dict(
        call("streamgate.v1.Broker", "Ack", {"stream": "py-orders", "group": "py-workers", "ids": ids})
    )
    assert acked == {"acknowledged": "1"}, acked

    # An error arrives as a status with the documented code.
    try:
        call("streamgate.v1.Broker", "Produce", {"stream": "", "messages": []})
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    else:
        raise AssertionError("empty stream name was accepted")

    print(json.dumps({"ok": True, "consumer": consumer, "id": message_id}))


if __name__ == "__main__":
    main(sys.argv[1])
