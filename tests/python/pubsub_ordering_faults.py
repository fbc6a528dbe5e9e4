"""Google's Python Pub/Sub client (google-cloud-pubsub), unmodified, on an ordered subscription
while the broker's link to Redis loses a reply (tests/pubsub.rs drives the fault): 20 ordering
keys x 100 messages published first, then a streaming-pull callback that sleeps 1 ms and acks.
Prints `published` and waits for a line on stdin (the test arms its fault meanwhile), and at
the end prints one JSON object of what arrived.

    PUBSUB_EMULATOR_HOST=127.0.0.1:50051 python tests/python/pubsub_ordering_faults.py <project>
"""

import json
import sys
import threading
import time

from google.cloud import pubsub_v1

PROJECT = sys.argv[1]
KEYS, PER_KEY, LIMIT_SECONDS = 20, 100, 60
publisher = pubsub_v1.PublisherClient(
    publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
subscriber = pubsub_v1.SubscriberClient()
topic = publisher.topic_path(PROJECT, "ordered-faults")
publisher.create_topic(request={"name": topic})
subscription = subscriber.subscription_path(PROJECT, "ordered-faults-sub")
subscriber.create_subscription(
    request={"name": subscription, "topic": topic, "enable_message_ordering": True})
futures = [publisher.publish(topic, f"{k}:{i}".encode(), ordering_key=f"key-{k}")
           for i in range(PER_KEY) for k in range(KEYS)]
for future in futures:
    future.result(timeout=60)

print("published", flush=True)
sys.stdin.readline()

lock = threading.Lock()
arrivals = {}


def take(message):
    with lock:
        key, seq = message.data.decode().split(":")
        arrivals.setdefault(key, []).append(int(seq))
    time.sleep(0.001)
    message.ack()


def arrived():
    with lock:
        return sum(len(set(v)) for v in arrivals.values())


started = time.monotonic()
future = subscriber.subscribe(subscription, callback=take)
while arrived() < KEYS * PER_KEY and time.monotonic() - started < LIMIT_SECONDS:
    time.sleep(0.05)
seconds = round(time.monotonic() - started, 2)
future.cancel()
try:
    future.result(timeout=10)
except Exception:  # noqa: BLE001 (cancelled is the normal end)
    pass
in_order = True
for seqs in arrivals.values():
    # At-least-once: a redelivery repeats a message, never reorders: drop consecutive repeats.
    deduped = [s for i, s in enumerate(seqs) if i == 0 or s != seqs[i - 1]]
    in_order = in_order and deduped == list(range(len(deduped)))
print(json.dumps({
    "arrived": arrived(),
    "seconds": seconds,
    "in_order": in_order,
    "stuck": {k: len(set(v)) for k, v in arrivals.items() if len(set(v)) < PER_KEY},
}), flush=True)
