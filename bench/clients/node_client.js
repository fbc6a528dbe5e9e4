// The Node (@grpc/grpc-js) row of the client comparison: one streamgate workload per run,
// printing {"rate": msg/s, "cpu_us": client CPU per message} as JSON. Uses the example's
// installed packages (npm ci --prefix examples/node).
//   node bench/clients/node_client.js <address> publish|consume <stream> <messages>
"use strict";

const path = require("path");
const modules = path.resolve(__dirname, "..", "..", "examples", "node", "node_modules");
const grpc = require(path.join(modules, "@grpc/grpc-js"));
const protoLoader = require(path.join(modules, "@grpc/proto-loader"));

const definition = protoLoader.loadSync("streamgate/v1/broker.proto", {
  includeDirs: [path.resolve(__dirname, "..", "..", "proto")],
  keepCase: false,
  longs: String,
  defaults: true,
});
const { streamgate } = grpc.loadPackageDefinition(definition);
const payload = Buffer.alloc(100, "x");

// 50 concurrent senders, each awaiting its Produce of one message before the next.
async function publish(broker, stream, messages) {
  let left = messages;
  const request = { stream, messages: [{ fields: [{ name: "body", value: payload }] }] };
  const produce = () =>
    new Promise((resolve, reject) => broker.produce(request, (err) => (err ? reject(err) : resolve())));
  const worker = async () => {
    while (left > 0) {
      left -= 1;
      await produce();
    }
  };
  await Promise.all(Array.from({ length: 50 }, worker));
}

// Consume a pre-filled stream, acking each frame's messages in one request; done when every
// ack is confirmed.
function consume(broker, stream, messages) {
  return new Promise((resolve, reject) => {
    const session = broker.consume();
    let confirmed = 0;
    let requestId = 0;
    session.on("data", (response) => {
      if (response.messages) {
        requestId += 1;
        const ids = response.messages.messages.map((m) => m.id);
        session.write({ ack: { requestId: String(requestId), stream, ids } });
      } else if (response.confirmation) {
        confirmed += response.confirmation.succeeded.length;
        if (confirmed >= messages) {
          session.end();
          resolve();
        }
      }
    });
    session.on("error", (err) => (err.code === grpc.status.CANCELLED ? resolve() : reject(err)));
    session.write({
      open: { streams: [{ stream }], group: "g", consumer: "c", createGroup: true, groupStartId: "0" },
    });
  });
}

async function main([address, workload, stream, count]) {
  const messages = Number(count);
  const broker = new streamgate.v1.Broker(address, grpc.credentials.createInsecure());
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  await (workload === "publish" ? publish : consume)(broker, stream, messages);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const used = process.cpuUsage(cpu);
  console.log(JSON.stringify({ rate: messages / seconds, cpu_us: (used.user + used.system) / messages }));
  broker.close();
}

main(process.argv.slice(2)).catch((err) => {
  console.error(err);
  process.exit(1);
});
