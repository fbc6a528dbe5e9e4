// A streamgate client in Node.js: produce, subscribe as a consumer group member, ack; then a
// consumer loop on the bidirectional Consume call that acks on the stream with confirmation; then a
// message's life: a dedupe key, an expiry and a delayed delivery.
// The protos are loaded at run time from the repository's proto/ with @grpc/proto-loader.
//
//   npm ci --prefix examples/node
//   node examples/node/client.js 127.0.0.1:50051
"use strict";

const path = require("path");
const crypto = require("crypto");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const root = path.resolve(__dirname, "..", "..", "proto");
const definition = protoLoader.loadSync("streamgate/v1/broker.proto", {
  includeDirs: [root],
  keepCase: false,
  longs: String,
  defaults: true,
});
const { streamgate } = grpc.loadPackageDefinition(definition);

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 10_000);
    client[method](request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

async function main(address) {
  const broker = new streamgate.v1.Broker(address, grpc.credentials.createInsecure());
  const stream = `node-example-${crypto.randomBytes(4).toString("hex")}`;

  const produced = await call(broker, "produce", {
    stream,
    messages: [0, 1, 2].map((i) => ({ fields: [{ name: "order", value: Buffer.from(String(i)) }] })),
  });
  console.log(`produced ${produced.ids.join(", ")} to ${stream}`);

  const events = broker.subscribe({
    streams: [{ stream }],
    group: "billing",
    consumer: "node-1",
    createGroup: true,
    groupStartId: "0",
  });
  const received = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no messages within 20 s")), 20_000);
    events.on("data", async (event) => {
      if (event.heartbeat) return; // keeps proxies from cutting a quiet stream
      if (event.started) {
        if (event.started.consumer !== "node-1") reject(new Error(`consumer ${event.started.consumer}`));
        return;
      }
      const message = event.message;
      const order = message.fields[0].value.toString();
      received.push(order);
      try {
        const acked = await call(broker, "ack", { stream, group: "billing", ids: [message.id] });
        if (Number(acked.acknowledged) !== 1) throw new Error(`ack returned ${acked.acknowledged}`);
        console.log(`received and acked ${message.id} order=${order}`);
      } catch (err) {
        reject(err);
      }
      if (received.length === 3) {
        clearTimeout(timer);
        events.cancel();
        resolve();
      }
    });
    events.on("error", (err) => {
      if (err.code !== grpc.status.CANCELLED) reject(err);
    });
  });
  if (received.join(",") !== "0,1,2") throw new Error(`received ${received}`);

  const fetched = await call(broker, "fetch", {
    streams: [{ stream, afterId: "0" }],
    group: "billing",
    consumer: "node-1",
  });
  if (fetched.messages.length !== 0) throw new Error("messages left pending");

  await consumeWithConfirmedAcks(broker, `${stream}-jobs`);
  await messageLifecycle(broker, `${stream}-life`);
  broker.close();
  console.log("node example: ok");
}

// The bidirectional Consume call: messages come several per frame, acks go back on the same
// stream, and the broker confirms which ids each ack applied to.
async function consumeWithConfirmedAcks(broker, stream) {
  await call(broker, "produce", {
    stream,
    messages: [0, 1, 2, 3, 4].map((i) => ({ fields: [{ name: "job", value: Buffer.from(String(i)) }] })),
  });
  const session = broker.consume();
  session.write({
    open: { streams: [{ stream }], group: "workers", consumer: "node-2", createGroup: true, groupStartId: "0" },
  });
  const jobs = [];
  let nextRequest = 1;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("Consume did not finish within 20 s")), 20_000);
    session.on("data", (response) => {
      if (response.messages) {
        const batch = response.messages.messages;
        jobs.push(...batch.map((m) => m.fields[0].value.toString()));
        // One ack for the whole frame, plus an id this consumer never held.
        const ids = batch.map((m) => m.id).concat(nextRequest === 1 ? ["1-0"] : []);
        session.write({ ack: { requestId: String(nextRequest), stream, ids } });
        nextRequest += 1;
      } else if (response.confirmation) {
        const { requestId, succeeded, failed } = response.confirmation;
        console.log(`ack ${requestId}: ${succeeded.length} took, ${JSON.stringify(failed.map((f) => [f.id, f.reason]))} did not`);
        if (requestId === "1" && (failed.length !== 1 || failed[0].id !== "1-0")) {
          reject(new Error(`unexpected confirmation ${JSON.stringify(response.confirmation)}`));
        }
        if (jobs.length === 5 && Number(requestId) === nextRequest - 1) session.end(); // half-close
      }
    });
    session.on("end", () => {
      clearTimeout(timer);
      resolve();
    });
    session.on("error", reject);
  });
  if (jobs.join(",") !== "0,1,2,3,4") throw new Error(`consumed ${jobs}`);
  console.log("consumed 5 jobs over Consume, every ack confirmed");
}

// A retried Produce with a dedupe key stores one message; a message with a ttl is not delivered
// once expired; a delayed one is appended when due (README, "Message lifecycle").
async function messageLifecycle(broker, stream) {
  const produce = (kind, message = {}, options = {}) =>
    call(broker, "produce", {
      stream,
      messages: [{ fields: [{ name: "kind", value: Buffer.from(kind) }], ...message }],
      ...options,
    });
  const first = await produce("payment", { dedupeKey: "payment-42" });
  const retry = await produce("payment", { dedupeKey: "payment-42" });
  if (first.ids.join() !== retry.ids.join()) throw new Error(`dedupe: ${first.ids} vs ${retry.ids}`);
  await produce("quote", { ttlMs: "1" });
  const held = await produce("reminder", {}, { delayMs: "300" });
  if (held.delayed.length !== 1 || held.ids.length !== 0) throw new Error(`delayed: ${JSON.stringify(held)}`);
  await new Promise((resolve) => setTimeout(resolve, 600));
  const fetched = await call(broker, "fetch", {
    streams: [{ stream }],
    group: "life",
    consumer: "node-3",
    createGroup: true,
    groupStartId: "0",
    count: 10,
  });
  const kinds = fetched.messages.map((m) => m.fields[0].value.toString());
  if (kinds.join() !== "payment,reminder") throw new Error(`lifecycle: ${kinds}`);
  console.log(`dedupe stored one payment, the expired quote was skipped, the reminder came: ${kinds}`);
}

main(process.argv[2] || "127.0.0.1:50051").catch((err) => {
  console.error(err);
  process.exit(1);
});
