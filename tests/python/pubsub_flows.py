"""Google's own Python Pub/Sub client (google-cloud-pubsub), unmodified, against streamgate:
PUBSUB_EMULATOR_HOST must point at the broker. Runs the flows a Pub/Sub user relies on and
prints one JSON object of what it saw; the Rust test (tests/pubsub.rs) asserts on it.

    PUBSUB_EMULATOR_HOST=127.0.0.1:50051 python tests/pubsub_flows.py <project> <messages>
"""

import json
import sys
import threading
import time

from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber import exceptions as sub_exceptions
from google.protobuf import timestamp_pb2

PROJECT = sys.argv[1]
MESSAGES = int(sys.argv[2])
publisher = pubsub_v1.PublisherClient()
subscriber = pubsub_v1.SubscriberClient()
result = {}


def topic(name):
    path = publisher.topic_path(PROJECT, name)
    publisher.create_topic(request={"name": path})
    return path


def subscription(name, topic_path, **settings):
    path = subscriber.subscription_path(PROJECT, name)
    subscriber.create_subscription(request={"name": path, "topic": topic_path, **settings})
    return path


def receive(path, callback, until, seconds=60, linger=0.0):
    """A streaming pull with `callback` until `until()` holds (or `seconds` pass), kept open
    `linger` seconds more (for the client's last acks or nacks to land)."""
    future = subscriber.subscribe(path, callback=callback)
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(linger)
    future.cancel()
    try:
        future.result(timeout=10)
    except Exception:  # noqa: BLE001 (cancelled is the normal end)
        pass


def code_of(call):
    try:
        call()
    except exceptions.GoogleAPICallError as err:
        return type(err).__name__
    return "OK"


# Many messages with attributes, all received by a callback and acked (and kept after their ack,
# for the test to read the entries from Redis).
orders = topic("orders")
orders_sub = subscription("orders-sub", orders, retain_acked_messages=True)
futures = [publisher.publish(orders, f"order {i}".encode(), kind="order", n=str(i))
           for i in range(MESSAGES)]
ids = [f.result(timeout=60) for f in futures]
result["published"] = len(set(ids))
seen, lock = set(), threading.Lock()
attributes_ok = True


def take(message):
    global attributes_ok
    with lock:
        n = message.attributes.get("n")
        if message.data != f"order {n}".encode() or message.attributes.get("kind") != "order":
            attributes_ok = False
        seen.add(n)
    message.ack()


receive(orders_sub, take, lambda: len(seen) >= MESSAGES)
time.sleep(1.5)  # the client sends its acks in batches; let the last ones land
result["received"] = len(seen)
result["attributes_ok"] = attributes_ok

# A nacked message comes back.
retry = topic("retry")
retry_sub = subscription("retry-sub", retry)
publisher.publish(retry, b"again").result()
deliveries = []


def nack_once(message):
    deliveries.append(message.message_id)
    if len(deliveries) == 1:
        message.nack()
    else:
        message.ack()


receive(retry_sub, nack_once, lambda: len(deliveries) >= 2, seconds=30)
result["nack_redelivered"] = len(deliveries) >= 2 and deliveries[0] == deliveries[1]

# A poison message reaches the dead-letter topic after max_delivery_attempts.
dead = topic("dead")
dead_sub = subscription("dead-sub", dead)
poison = topic("poison")
poison_sub = subscription("poison-sub", poison, dead_letter_policy={
    "dead_letter_topic": dead, "max_delivery_attempts": 5})
publisher.publish(poison, b"poison", kind="bad").result()
attempts = []


def always_nack(message):
    attempts.append(message.delivery_attempt)
    message.nack()


dead_letters = []


def take_dead(message):
    dead_letters.append(message.data)
    message.ack()


# Open a little longer: the fifth nack must land, and the dead-lettering sweep is run by a
# member of the subscription.
receive(poison_sub, always_nack, lambda: len(attempts) >= 5, seconds=30, linger=1.5)
receive(dead_sub, take_dead, lambda: dead_letters, seconds=30)
result["delivery_attempts"] = attempts[:5]
result["dead_lettered"] = [d.decode() for d in dead_letters]

# Exactly-once delivery: acks are confirmed.
once = topic("once")
once_sub = subscription("once-sub", once, enable_exactly_once_delivery=True)
for i in range(20):
    publisher.publish(once, f"once {i}".encode()).result()
confirmed = []


def ack_confirmed(message):
    try:
        message.ack_with_response().result(timeout=30)
        confirmed.append("SUCCESS")
    except sub_exceptions.AcknowledgeError as err:
        confirmed.append(err.error_code.name)


receive(once_sub, ack_confirmed, lambda: len(confirmed) >= 20, seconds=60)
result["exactly_once"] = confirmed

# ... and an ack id that no longer holds its message is refused: the second ack of a message.
publisher.publish(once, b"twice").result()
second_ack = []


def ack_twice(message):
    message.ack_with_response().result(timeout=30)
    try:
        message.ack_with_response().result(timeout=30)
        second_ack.append("SUCCESS")
    except sub_exceptions.AcknowledgeError as err:
        second_ack.append(err.error_code.name)


receive(once_sub, ack_twice, lambda: second_ack, seconds=30)
result["exactly_once_second_ack"] = second_ack

# Seek to a time replays what was published after it.
replay = topic("replay")
replay_sub = subscription("replay-sub", replay, retain_acked_messages=True)
before = timestamp_pb2.Timestamp()
before.GetCurrentTime()
time.sleep(0.01)
for i in range(10):
    publisher.publish(replay, f"r{i}".encode()).result()
rounds = [set(), set()]


def take_round(index):
    def take(message):
        rounds[index].add(message.data)
        message.ack()
    return take


receive(replay_sub, take_round(0), lambda: len(rounds[0]) >= 10, seconds=30)
time.sleep(1.5)
subscriber.seek(request={"subscription": replay_sub, "time": before})
receive(replay_sub, take_round(1), lambda: len(rounds[1]) >= 10, seconds=30)
result["replayed"] = [len(rounds[0]), len(rounds[1])]

# A filter delivers only what matches.
mixed = topic("mixed")
kept_sub = subscription("kept-sub", mixed, filter='attributes.keep = "yes"')
for i in range(10):
    publisher.publish(mixed, f"keep {i}".encode(), keep="yes").result()
    publisher.publish(mixed, f"drop {i}".encode(), keep="no").result()
kept = []


def take_kept(message):
    kept.append(message.data.decode())
    message.ack()


receive(kept_sub, take_kept, lambda: False, seconds=3)
result["filtered"] = sorted(kept)
# Without retain_acked_messages, what every subscription acknowledged is deleted (the test
# checks the stream empties); unacknowledged messages are kept 7 days unless it says otherwise.
result["default_retention_seconds"] = subscriber.get_subscription(
    request={"subscription": kept_sub}).message_retention_duration.total_seconds()

# Ordering keys: an ordering publisher, 100 keys, and the client's multi-threaded callback
# scheduler see each key's messages in publish order.
KEYS, PER_KEY = 100, 10
ordering_publisher = pubsub_v1.PublisherClient(
    publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
ordered = topic("ordered")
ordered_sub = subscription("ordered-sub", ordered, enable_message_ordering=True)
ordered_futures = [ordering_publisher.publish(ordered, f"{k}:{i}".encode(), ordering_key=f"key-{k}")
                   for i in range(PER_KEY) for k in range(KEYS)]
for f in ordered_futures:
    f.result(timeout=60)
arrivals, running, overlaps = {}, set(), []


def take_ordered(message):
    key = message.ordering_key
    with lock:
        if key in running:
            overlaps.append(key)
        running.add(key)
        arrivals.setdefault(key, []).append(int(message.data.decode().split(":")[1]))
    time.sleep(0.002)
    with lock:
        running.discard(key)
    message.ack()


def all_arrived():
    with lock:
        return sum(len(set(v)) for v in arrivals.values()) >= KEYS * PER_KEY


started = time.monotonic()
receive(ordered_sub, take_ordered, all_arrived, seconds=120)
result["ordered_seconds"] = round(time.monotonic() - started, 2)
# At-least-once: a redelivery repeats a message, never reorders: drop consecutive repeats.
in_order = True
for seqs in arrivals.values():
    deduped = [s for i, s in enumerate(seqs) if i == 0 or s != seqs[i - 1]]
    in_order = in_order and deduped == list(range(PER_KEY))
result["ordered"] = {"keys": len(arrivals), "in_order": in_order,
                     "messages": sum(len(set(v)) for v in arrivals.values()),
                     "overlaps": len(overlaps)}

# Unary Pull and Acknowledge, as the low-level API offers them.
publisher.publish(retry, b"pulled").result()
pulled = subscriber.pull(request={"subscription": retry_sub, "max_messages": 10}, timeout=10)
subscriber.acknowledge(request={"subscription": retry_sub,
                                "ack_ids": [m.ack_id for m in pulled.received_messages]})
result["pulled"] = [m.message.data.decode() for m in pulled.received_messages]

# Administration and the errors the real service gives.
result["topics"] = sorted(t.name.rsplit("/", 1)[1]
                          for t in publisher.list_topics(request={"project": f"projects/{PROJECT}"}))
result["topic_subscriptions"] = list(publisher.list_topic_subscriptions(request={"topic": orders}))
result["errors"] = {
    "create_existing_topic": code_of(lambda: publisher.create_topic(request={"name": orders})),
    "get_missing_topic": code_of(lambda: publisher.get_topic(
        request={"topic": publisher.topic_path(PROJECT, "nope-never")})),
    "bad_topic_name": code_of(lambda: publisher.create_topic(
        request={"name": f"projects/{PROJECT}/topics/x"})),
    "publish_missing_topic": code_of(lambda: publisher.publish(
        publisher.topic_path(PROJECT, "nope-never"), b"x").result(timeout=30)),
    "push_subscription": code_of(lambda: subscriber.create_subscription(request={
        "name": subscriber.subscription_path(PROJECT, "push-sub"), "topic": orders,
        "push_config": {"push_endpoint": "https://example.com/push"}})),
    "short_retention": code_of(lambda: subscriber.create_subscription(request={
        "name": subscriber.subscription_path(PROJECT, "brief-sub"), "topic": orders,
        "message_retention_duration": {"seconds": 60}})),
    "snapshot": code_of(lambda: subscriber.create_snapshot(request={
        "name": f"projects/{PROJECT}/snapshots/snap", "subscription": orders_sub})),
}
subscriber.delete_subscription(request={"subscription": retry_sub})
result["after_delete"] = code_of(lambda: subscriber.get_subscription(
    request={"subscription": retry_sub}))
print(json.dumps(result))
sys.stdout.flush()
