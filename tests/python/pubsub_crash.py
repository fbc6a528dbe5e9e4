"""Google's Python Pub/Sub client through a broker SIGKILL (tests/pubsub.rs kills and restarts
the broker while this runs): a publisher sends a steady trickle, a streaming-pull subscriber acks
what it gets. Prints one JSON object: how many ids the publisher got, which of them never
arrived, what failed, and whether the subscriber's stream had to be reopened by hand (it must
not: the client reconnects by itself).

    PUBSUB_EMULATOR_HOST=127.0.0.1:50051 python tests/python/pubsub_crash.py <project> <messages>
"""

import json
import sys
import threading
import time

from google.cloud import pubsub_v1

PROJECT, MESSAGES = sys.argv[1], int(sys.argv[2])
publisher = pubsub_v1.PublisherClient()
subscriber = pubsub_v1.SubscriberClient()
topic = publisher.topic_path(PROJECT, "crash")
sub = subscriber.subscription_path(PROJECT, "crash-sub")
publisher.create_topic(request={"name": topic})
subscriber.create_subscription(request={"name": sub, "topic": topic, "ack_deadline_seconds": 10})

lock = threading.Lock()
got_ids, failures, received = set(), [], set()


def take(message):
    with lock:
        received.add(message.message_id)
    message.ack()


stream = subscriber.subscribe(sub, callback=take)


def published(future):
    try:
        with lock:
            got_ids.add(future.result())
    except Exception as err:  # noqa: BLE001 (reported, not hidden)
        with lock:
            failures.append(type(err).__name__)


started = time.monotonic()
futures = []
for i in range(MESSAGES):
    future = publisher.publish(topic, f"m{i}".encode(), n=str(i))
    future.add_done_callback(published)
    futures.append(future)
    time.sleep(0.004)
for future in futures:
    try:
        future.result(timeout=120)
    except Exception:  # noqa: BLE001 (counted in `published`)
        pass
publishing_seconds = time.monotonic() - started
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    with lock:
        if got_ids <= received:
            break
    time.sleep(0.1)
stream_ended = stream.done()
stream.cancel()
with lock:
    missing = sorted(got_ids - received)
    print(json.dumps({
        "published": len(got_ids),
        "failed": failures,
        "received": len(received & got_ids),
        "missing": missing[:20],
        "stream_ended_by_itself": stream_ended,
        "publishing_seconds": round(publishing_seconds, 1),
        "settled_seconds": round(time.monotonic() - started, 1),
    }))
sys.stdout.flush()
