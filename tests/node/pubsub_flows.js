// Google's own Node.js Pub/Sub client (@google-cloud/pubsub), unmodified, against streamgate:
// PUBSUB_EMULATOR_HOST must point at the broker. Runs the flows a Pub/Sub user relies on and
// prints one JSON object of what it saw; the Rust test (tests/pubsub.rs) asserts on it, with the
// same checks as for the Python client.
//
//     PUBSUB_EMULATOR_HOST=127.0.0.1:50051 node tests/node/pubsub_flows.js <project> <messages>
'use strict';

const {PubSub} = require('@google-cloud/pubsub');

const PROJECT = process.argv[2];
const MESSAGES = Number(process.argv[3]);
const pubsub = new PubSub({projectId: PROJECT});
const result = {};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function topic(name, options) {
  const [created] = await pubsub.createTopic(name);
  return options ? pubsub.topic(created.name, options) : created;
}

async function subscription(name, topicHandle, settings = {}) {
  const [created] = await topicHandle.createSubscription(name, settings);
  return created;
}

// A streaming pull calling `onMessage` until `until()` holds (or `seconds` pass), kept open
// `linger` ms more for the client's last acks or nacks to land.
async function receive(sub, onMessage, until, seconds = 60, linger = 0) {
  const errors = [];
  const onError = (err) => errors.push(String(err));
  sub.on('message', onMessage);
  sub.on('error', onError);
  const deadline = Date.now() + seconds * 1000;
  while (!until() && Date.now() < deadline) await sleep(50);
  await sleep(linger);
  await sub.close();
  // Only ours: the client's own listeners reopen the stream on the next `message` listener.
  sub.removeListener('message', onMessage);
  sub.removeListener('error', onError);
  if (errors.length) result.subscriber_errors = (result.subscriber_errors || []).concat(errors);
}

async function codeOf(call) {
  try {
    await call();
  } catch (err) {
    return {3: 'InvalidArgument', 5: 'NotFound', 6: 'AlreadyExists', 12: 'MethodNotImplemented'}[err.code] ||
      `code ${err.code}`;
  }
  return 'OK';
}

async function main() {
  // Many messages with attributes, all received by a listener and acked.
  const orders = await topic('orders');
  const ordersSub = await subscription('orders-sub', orders, {retainAckedMessages: true});
  const ids = await Promise.all(Array.from({length: MESSAGES}, (_, i) =>
    orders.publishMessage({data: Buffer.from(`order ${i}`), attributes: {kind: 'order', n: String(i)}})));
  result.published = new Set(ids).size;
  const seen = new Set();
  let attributesOk = true;
  await receive(ordersSub, (m) => {
    const n = m.attributes.n;
    if (m.data.toString() !== `order ${n}` || m.attributes.kind !== 'order') attributesOk = false;
    seen.add(n);
    m.ack();
  }, () => seen.size >= MESSAGES, 60, 1500);
  result.received = seen.size;
  result.attributes_ok = attributesOk;

  // A nacked message comes back.
  const retry = await topic('retry');
  const retrySub = await subscription('retry-sub', retry);
  await retry.publishMessage({data: Buffer.from('again')});
  const deliveries = [];
  await receive(retrySub, (m) => {
    deliveries.push(m.id);
    if (deliveries.length === 1) m.nack(); else m.ack();
  }, () => deliveries.length >= 2, 30, 500);
  result.nack_redelivered = deliveries.length >= 2 && deliveries[0] === deliveries[1];

  // A poison message reaches the dead-letter topic after maxDeliveryAttempts.
  const dead = await topic('dead');
  const deadSub = await subscription('dead-sub', dead);
  const poison = await topic('poison');
  const poisonSub = await subscription('poison-sub', poison, {
    deadLetterPolicy: {deadLetterTopic: dead.name, maxDeliveryAttempts: 5},
  });
  await poison.publishMessage({data: Buffer.from('poison'), attributes: {kind: 'bad'}});
  const attempts = [];
  await receive(poisonSub, (m) => {
    attempts.push(m.deliveryAttempt);
    m.nack();
  }, () => attempts.length >= 5, 30, 1500);
  const deadLetters = [];
  await receive(deadSub, (m) => {
    deadLetters.push(m.data.toString());
    m.ack();
  }, () => deadLetters.length > 0, 30);
  result.delivery_attempts = attempts.slice(0, 5);
  result.dead_lettered = deadLetters;

  // Exactly-once delivery: acks are confirmed.
  const once = await topic('once');
  const onceSub = await subscription('once-sub', once, {enableExactlyOnceDelivery: true});
  for (let i = 0; i < 20; i++) await once.publishMessage({data: Buffer.from(`once ${i}`)});
  const confirmed = [];
  await receive(onceSub, (m) => {
    m.ackWithResponse().then(
      (response) => confirmed.push(response === 'SUCCESS' || response === 0 ? 'SUCCESS' : String(response)),
      (err) => confirmed.push(err.errorCode || String(err)));
  }, () => confirmed.length >= 20, 60);
  result.exactly_once = confirmed;


  // Ordering keys: an ordering publisher, 100 keys, each key's messages in publish order.
  const KEYS = 100;
  const PER_KEY = 10;
  const ordered = await topic('ordered', {messageOrdering: true});
  const orderedSub = await subscription('ordered-sub', ordered, {enableMessageOrdering: true});
  const published = [];
  for (let i = 0; i < PER_KEY; i++) {
    for (let k = 0; k < KEYS; k++) {
      published.push(ordered.publishMessage({data: Buffer.from(`${k}:${i}`), orderingKey: `key-${k}`}));
    }
  }
  await Promise.all(published);
  const arrivals = new Map();
  const running = new Set();
  let overlaps = 0;
  const distinct = () => [...arrivals.values()].reduce((n, seqs) => n + new Set(seqs).size, 0);
  const started = Date.now();
  await receive(orderedSub, async (m) => {
    if (running.has(m.orderingKey)) overlaps++;
    running.add(m.orderingKey);
    const seqs = arrivals.get(m.orderingKey) || [];
    seqs.push(Number(m.data.toString().split(':')[1]));
    arrivals.set(m.orderingKey, seqs);
    await sleep(2);
    running.delete(m.orderingKey);
    m.ack();
  }, () => distinct() >= KEYS * PER_KEY, 120);
  result.ordered_seconds = (Date.now() - started) / 1000;
  let inOrder = true;
  for (const seqs of arrivals.values()) {
    const deduped = seqs.filter((s, i) => i === 0 || s !== seqs[i - 1]);
    inOrder = inOrder && JSON.stringify(deduped) === JSON.stringify([...Array(PER_KEY).keys()]);
  }
  result.ordered = {keys: arrivals.size, in_order: inOrder, messages: distinct(), overlaps};

  // Seek to a time replays what was published after it.
  const replay = await topic('replay');
  const replaySub = await subscription('replay-sub', replay, {retainAckedMessages: true});
  const before = new Date();
  await sleep(10);
  for (let i = 0; i < 10; i++) await replay.publishMessage({data: Buffer.from(`r${i}`)});
  const rounds = [new Set(), new Set()];
  await receive(replaySub, (m) => { rounds[0].add(m.data.toString()); m.ack(); },
    () => rounds[0].size >= 10, 30, 1500);
  await replaySub.seek(before);
  await receive(replaySub, (m) => { rounds[1].add(m.data.toString()); m.ack(); },
    () => rounds[1].size >= 10, 30);
  result.replayed = [rounds[0].size, rounds[1].size];

  // A filter delivers only what matches.
  const mixed = await topic('mixed');
  const keptSub = await subscription('kept-sub', mixed, {filter: 'attributes.keep = "yes"'});
  for (let i = 0; i < 10; i++) {
    await mixed.publishMessage({data: Buffer.from(`keep ${i}`), attributes: {keep: 'yes'}});
    await mixed.publishMessage({data: Buffer.from(`drop ${i}`), attributes: {keep: 'no'}});
  }
  const kept = [];
  await receive(keptSub, (m) => { kept.push(m.data.toString()); m.ack(); }, () => false, 3);
  result.filtered = kept.sort();
  // Without retainAckedMessages, what every subscription acknowledged is deleted (the test
  // checks the stream empties); unacknowledged messages are kept 7 days unless it says otherwise.
  const [keptMeta] = await keptSub.getMetadata();
  result.default_retention_seconds = Number(keptMeta.messageRetentionDuration.seconds);

  // Administration and the errors the real service gives.
  const [topics] = await pubsub.getTopics();
  result.topics = topics.map((t) => t.name.split('/').pop()).sort();
  const [topicSubscriptions] = await orders.getSubscriptions();
  result.topic_subscriptions = topicSubscriptions.map((s) => s.name);
  result.errors = {
    create_existing_topic: await codeOf(() => pubsub.createTopic('orders')),
    get_missing_topic: await codeOf(() => pubsub.topic('nope-never').getMetadata()),
    bad_topic_name: await codeOf(() => pubsub.createTopic('x')),
    publish_missing_topic: await codeOf(() => pubsub.topic('nope-never').publishMessage({data: Buffer.from('x')})),
    push_subscription: await codeOf(() => orders.createSubscription('push-sub',
      {pushConfig: {pushEndpoint: 'https://example.com/push'}})),
    short_retention: await codeOf(() => orders.createSubscription('brief-sub',
      {messageRetentionDuration: {seconds: 60}})),
    snapshot: await codeOf(() => ordersSub.createSnapshot('snap')),
  };
  await retrySub.delete();
  result.after_delete = await codeOf(() => retrySub.getMetadata());
  console.log(JSON.stringify(result));
  await pubsub.close();
}

main().then(() => process.exit(0), (err) => {
  console.error(err);
  process.exit(1);
});
