// gRPC-Web over fetch, for the console: the broker's tonic-web layer turns these requests into
// ordinary gRPC calls, so the page uses exactly the API every other client uses.
//
// Wire format (the gRPC-Web protocol): the request body is one frame, a flag byte (0), a
// big-endian 32-bit length and the protobuf message; the response body is data frames (flag 0)
// then one trailer frame (flag 0x80) holding `grpc-status` and `grpc-message` as HTTP/1 header
// lines. A "trailers-only" answer carries the status in the response headers instead.
// protobufjs (vendored, global `protobuf`) encodes and decodes the messages from our .proto files.

/* global protobuf */

const CODE_NAMES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
  "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];

/** A call that ended with a non-OK status: what the server said, as it said it. */
export class GrpcError extends Error {
  constructor(code, message) {
    super(message || CODE_NAMES[code] || `status ${code}`);
    this.code = code;
    this.codeName = CODE_NAMES[code] || `CODE_${code}`;
  }
  toString() {
    return `${this.codeName}: ${this.message}`;
  }
}

function frame(bytes) {
  const out = new Uint8Array(5 + bytes.length);
  new DataView(out.buffer).setUint32(1, bytes.length);
  out.set(bytes, 5);
  return out;
}

function parseTrailers(text) {
  const trailers = {};
  for (const line of text.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return trailers;
}

function statusFrom(get) {
  const status = get("grpc-status");
  if (status === null || status === undefined) return null;
  let message = get("grpc-message") || "";
  try {
    message = decodeURIComponent(message);
  } catch (_) {
    // Not percent-encoded after all: show it as sent.
  }
  return { code: Number(status), message };
}

/** Splits a response body into data frames and the trailers. */
function splitFrames(body) {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const messages = [];
  let trailers = null;
  let at = 0;
  while (at + 5 <= body.length) {
    const flag = body[at];
    const length = view.getUint32(at + 1);
    const payload = body.subarray(at + 5, at + 5 + length);
    at += 5 + length;
    if (flag & 0x80) trailers = parseTrailers(new TextDecoder().decode(payload));
    else messages.push(payload);
  }
  return { messages, trailers };
}

/** Loads our .proto files (served by the broker beside the page) into one protobufjs root. */
export async function loadProtos(base) {
  const root = new protobuf.Root();
  for (const file of ["broker.proto", "subscription.proto", "admin.proto"]) {
    const response = await fetch(`${base}/proto/streamgate/v1/${file}`);
    if (!response.ok) throw new Error(`cannot load ${file}: HTTP ${response.status}`);
    protobuf.parse(await response.text(), root, { keepCase: true });
  }
  root.resolveAll();
  return root;
}

/** Calls one method: `service` is the full name ("streamgate.v1.Admin"). */
export class Client {
  constructor(root, token) {
    this.root = root;
    this.token = token || "";
  }

  method(service, name) {
    const method = this.root.lookupService(service).methods[name];
    if (!method) throw new Error(`${service} has no method ${name}`);
    return method;
  }

  /** A unary call: resolves to the response as a plain object, or rejects with a GrpcError. */
  async unary(service, name, request) {
    const method = this.method(service, name);
    const requestType = method.resolvedRequestType;
    const responseType = method.resolvedResponseType;
    const problem = requestType.verify(request);
    if (problem) throw new Error(`bad ${requestType.name}: ${problem}`);
    const headers = {
      "content-type": "application/grpc-web+proto",
      "x-grpc-web": "1",
      "grpc-timeout": "30S",
    };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let response;
    try {
      response = await fetch(`/${service}/${name}`, {
        method: "POST",
        headers,
        body: frame(requestType.encode(requestType.fromObject(request)).finish()),
      });
    } catch (err) {
      throw new GrpcError(14, `the broker does not answer (${err.message})`);
    }
    const headerStatus = statusFrom((h) => response.headers.get(h));
    if (headerStatus && headerStatus.code !== 0) throw new GrpcError(headerStatus.code, headerStatus.message);
    if (!response.ok) throw new GrpcError(14, `HTTP ${response.status} from the broker`);
    const { messages, trailers } = splitFrames(new Uint8Array(await response.arrayBuffer()));
    const status = headerStatus || (trailers && statusFrom((h) => trailers[h]));
    if (!status) throw new GrpcError(13, "the answer ended without a gRPC status");
    if (status.code !== 0) throw new GrpcError(status.code, status.message);
    const decoded = messages.length ? responseType.decode(messages[0]) : responseType.create();
    return responseType.toObject(decoded, { longs: Number, enums: String, bytes: Array, defaults: true });
  }
}
