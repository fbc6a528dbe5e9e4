// The streamgate console: views over the Admin API, actions behind confirmations, charts of the
// broker's sampled history. Every number on the page comes from an RPC; every action is one.
// Nothing from a message is ever put into the page as HTML (textContent only).

import { Client, GrpcError, loadProtos } from "./grpc-web.js";
import { timeChart } from "./charts.js";

const ADMIN = "streamgate.v1.Admin";
const BROKER = "streamgate.v1.Broker";
const TOKEN_KEY = "streamgate.console.token";
const params = new URLSearchParams(location.search);
/** How often live views refresh (`?refresh=ms`, for a closer look or a test). */
const REFRESH_MS = Math.max(500, Number(params.get("refresh")) || 5000);
/** Most streams whose details the streams view loads. */
const DETAILED_STREAMS = 100;

let client = null;
let refreshTimer = null;

const admin = (method, request = {}) => client.unary(ADMIN, method, request);
const broker = (method, request = {}) => client.unary(BROKER, method, request);

// ---------------------------------------------------------------- page helpers

/** Builds an element: `on*` props are listeners, `testid` sets data-testid, children are text or nodes. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "testid") el.dataset.testid = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (typeof value === "boolean") el[key] = value;
    else el.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const link = (href, text, props = {}) => h("a", { href, ...props }, text);
const enc = encodeURIComponent;
const num = (n) => (n === null || n === undefined ? "unknown" : Number(n).toLocaleString("en-US"));

function toast(title, detail, { error = false } = {}) {
  const box = h("div", { class: error ? "toast error" : "toast", testid: error ? "toast-error" : "toast" },
    h("b", {}, title), detail ? h("span", {}, detail) : null);
  document.getElementById("toasts").append(box);
  setTimeout(() => box.remove(), error ? 20000 : 8000);
}

function showError(title, err) {
  if (err instanceof GrpcError && err.code === 16) signIn(err.message);
  toast(title, err instanceof GrpcError ? err.toString() : String(err.message || err), { error: true });
}

/** Asks before an action; resolves to true when the operator confirms. */
function confirmAction(title, text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

/** Runs an action after confirmation, reports the outcome, then calls `after`. */
async function act(title, text, run, after) {
  if (!(await confirmAction(title, text))) return;
  try {
    const outcome = await run();
    toast(`${title}: done`, outcome || "");
  } catch (err) {
    showError(`${title}: refused`, err);
  }
  if (after) await after();
}

function duration(ms) {
  if (ms === null || ms === undefined) return "unknown";
  const s = Math.floor(Number(ms) / 1000);
  if (s < 1) return `${Number(ms)} ms`;
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172800) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

/** The time part of a stream id, as an age. */
function idAge(id) {
  const ms = Number(String(id || "").split("-")[0]);
  return Number.isFinite(ms) && ms > 0 ? duration(Date.now() - ms) : "";
}

function idTime(id) {
  const ms = Number(String(id || "").split("-")[0]);
  return Number.isFinite(ms) && ms > 0 ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "";
}

const isDeadLetterStream = (name) => /:dlq$/.test(name);

// ---------------------------------------------------------------- permissions

/** What the caller may do on `streams`: a Map stream → Set of permission names. */
async function permissions(streams) {
  const described = await admin("DescribeCaller", { streams });
  const byStream = new Map(described.streams.map((s) => [s.stream, new Set(s.permissions)]));
  return { may: (permission, stream) => byStream.get(stream)?.has(permission) ?? false, described };
}

async function signIn(reason) {
  const dialog = document.getElementById("login");
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  error.textContent = reason || "";
  if (dialog.open) return;
  dialog.showModal();
  await new Promise((resolve) => {
    const submit = async (event) => {
      event.preventDefault();
      client.token = document.getElementById("token").value.trim();
      try {
        const who = await admin("DescribeCaller", { streams: [] });
        sessionStorage.setItem(TOKEN_KEY, client.token);
        form.removeEventListener("submit", submit);
        dialog.close();
        showWho(who);
        resolve();
      } catch (err) {
        error.textContent = err instanceof GrpcError ? err.toString() : String(err);
      }
    };
    form.addEventListener("submit", submit);
  });
  route();
}

function showWho(who) {
  const label = document.getElementById("who");
  const signOut = document.getElementById("sign-out");
  if (!who.authentication) {
    label.textContent = "authentication off: every caller may do everything";
    signOut.hidden = true;
    return;
  }
  label.textContent = `signed in as ${who.principal} (${who.any_stream.join(", ") || "no permissions"})`;
  signOut.hidden = false;
}

// ---------------------------------------------------------------- views

/** A view renders into `main` and may return a function that refreshes its live parts. */
async function render(view, ...args) {
  clearInterval(refreshTimer);
  const main = document.getElementById("view");
  main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    const refresh = await view(main, ...args);
    if (refresh) {
      refreshTimer = setInterval(() => refresh().catch((err) => showError("Refresh failed", err)), REFRESH_MS);
    }
  } catch (err) {
    if (err instanceof GrpcError && err.code === 16) return signIn(err.message);
    main.replaceChildren(h("h2", {}, "Cannot show this page"),
      h("p", { class: "error", testid: "view-error" }, err instanceof GrpcError ? err.toString() : String(err)));
  }
}

async function streamRow(stream) {
  const [info, history, retention] = await Promise.all([
    admin("GetStreamInfo", { stream }),
    admin("GetHistory", { stream }).catch(() => null),
    admin("GetRetention", { stream }).catch(() => null),
  ]);
  const last = history?.samples?.[history.samples.length - 1];
  const name = isDeadLetterStream(stream)
    ? [link(`#/stream/${enc(stream)}`, stream), " ", link(`#/dead-letters/${enc(stream)}`, "dead letters", { class: "badge dead" })]
    : link(`#/stream/${enc(stream)}`, stream);
  return h("tr", { testid: "stream-row", dataset: { stream } },
    h("td", {}, name),
    h("td", { class: "num", testid: "stream-length" }, num(info.length)),
    h("td", { class: "num" }, last ? last.produced_per_second.toFixed(1) : "–"),
    h("td", { class: "num" }, last ? last.delivered_per_second.toFixed(1) : "–"),
    h("td", { class: "num" }, info.first_entry ? idAge(info.first_entry.id) : "empty"),
    h("td", { class: "num" }, num(info.groups)),
    h("td", {}, retention ? retentionText(retention) : h("span", { class: "muted" }, "none")));
}

function retentionText(policy) {
  const parts = [];
  if (policy.acked) parts.push("delete when acked");
  if (policy.max_age_ms) parts.push(`max age ${duration(policy.max_age_ms)}${policy.keep_pending ? " (keep pending)" : ""}`);
  if (policy.max_len) parts.push(`max ${num(policy.max_len)} entries`);
  return parts.join(", ") || "dedupe window only";
}

async function streamsView(main) {
  const table = h("tbody");
  const note = h("p", { class: "muted" });
  main.replaceChildren(
    h("h2", {}, "Streams"),
    h("table", { testid: "streams" },
      h("thead", {}, h("tr", {}, h("th", {}, "Stream"), h("th", { class: "num" }, "Length"),
        h("th", { class: "num" }, "In /s"), h("th", { class: "num" }, "Out /s"),
        h("th", { class: "num" }, "Oldest entry"), h("th", { class: "num" }, "Groups"), h("th", {}, "Retention"))),
      table),
    note);
  const refresh = async () => {
    const page = await admin("ListStreams", { pattern: "*", page_size: 500 });
    const names = [...new Set(page.streams)].sort();
    const rows = await Promise.all(names.slice(0, DETAILED_STREAMS).map((s) =>
      streamRow(s).catch((err) => h("tr", {}, h("td", {}, s), h("td", { colspan: 6, class: "error" }, String(err))))));
    table.replaceChildren(...rows);
    note.textContent = [
      names.length === 0 ? "No streams yet." : "",
      names.length > DETAILED_STREAMS ? `Showing the first ${DETAILED_STREAMS} of ${names.length}.` : "",
      page.next_page_token ? "More streams exist than one listing page holds." : "",
      "Rates are per second over the last sampling interval.",
    ].filter(Boolean).join(" ");
  };
  await refresh();
  return refresh;
}

function fact(label, value, testid) {
  return h("div", { class: "fact", testid }, h("b", {}, value), h("span", {}, label));
}

/** Draws a stream's history into `box`, reusing the chart boxes drawn there before. */
function historyCharts(history, box) {
  if (!history) {
    box.replaceChildren(h("p", { class: "muted" }, "No history: the broker samples it with --console-addr."));
    return;
  }
  const previous = box.charts || new Map();
  const charts = new Map();
  const chart = (key, props, options) => {
    const el = previous.get(key) || h("div", props);
    charts.set(key, el);
    box.append(el);
    timeChart(el, options);
  };
  box.replaceChildren();
  const samples = history.samples;
  const times = samples.map((s) => s.at_ms);
  chart("length", { testid: "chart-length" }, { title: "Length", times, series: [{ label: "entries", values: samples.map((s) => s.length) }] });
  chart("rates", { testid: "chart-rates" }, {
    title: "Produce and deliver rates", unit: "/s", times, series: [
      { label: "produced", values: samples.map((s) => s.produced_per_second) },
      { label: "delivered", values: samples.map((s) => s.delivered_per_second) },
    ],
  });
  for (const group of history.groups) {
    chart(`group:${group.group}`, { testid: "chart-group", dataset: { group: group.group } }, {
      title: `Group ${group.group}: lag and pending`, times: group.samples.map((s) => s.at_ms), series: [
        { label: "lag", values: group.samples.map((s) => (s.lag === undefined ? null : s.lag)) },
        { label: "pending", values: group.samples.map((s) => s.pending) },
      ],
    });
  }
  // A group that is gone: its chart goes with it.
  for (const [key, el] of previous) if (!charts.has(key) && el.plot) el.plot.destroy();
  box.charts = charts;
}

async function streamView(main, stream) {
  const { may } = await permissions([stream]);
  const facts = h("div", { class: "facts" });
  const charts = h("div", { class: "charts" });
  const groups = h("tbody");
  const toolbar = h("div", { class: "toolbar" },
    link(`#/messages/${enc(stream)}`, "Browse messages", { testid: "browse" }),
    isDeadLetterStream(stream) ? link(`#/dead-letters/${enc(stream)}`, "Dead letters") : link(`#/dead-letters/${enc(`${stream}:dlq`)}`, "Its dead letters (default stream)"));
  if (may("admin-write", stream)) {
    const maxLen = h("input", { type: "number", min: "0", placeholder: "keep newest N", testid: "trim-maxlen", size: "12" });
    toolbar.append(maxLen, h("button", {
      type: "button", class: "danger", testid: "trim",
      onclick: () => {
        const keep = Number(maxLen.value);
        if (!maxLen.value || !Number.isInteger(keep) || keep < 0) return toast("Trim", "give how many entries to keep", { error: true });
        act("Trim stream", `Delete the oldest entries of ${stream}, keeping the newest ${keep}? Entries a group has not read yet are deleted too.`,
          async () => `${num((await admin("TrimStream", { stream, trim: { max_len: keep } })).trimmed)} entries deleted`, refresh);
      },
    }, "Trim"));
  }
  main.replaceChildren(
    h("h2", {}, "Stream ", h("code", {}, stream)),
    facts, toolbar,
    h("h3", {}, "Last hour"), charts,
    h("h3", {}, "Groups"),
    h("table", { testid: "groups" },
      h("thead", {}, h("tr", {}, h("th", {}, "Group"), h("th", { class: "num" }, "Consumers"), h("th", { class: "num" }, "Pending"),
        h("th", { class: "num" }, "Lag"), h("th", {}, "Last delivered"), h("th", {}, "Subscription"))),
      groups));
  async function refresh() {
    const [info, history, groupList, subscriptions, retention] = await Promise.all([
      admin("GetStreamInfo", { stream }),
      admin("GetHistory", { stream }).catch(() => null),
      admin("ListGroups", { stream }),
      admin("ListSubscriptions", { stream }).catch(() => ({ subscriptions: [] })),
      admin("GetRetention", { stream }).catch(() => null),
    ]);
    facts.replaceChildren(
      fact("entries", num(info.length), "fact-length"),
      fact("ever added", num(info.entries_added)),
      fact("oldest entry", info.first_entry ? `${idAge(info.first_entry.id)} old` : "empty"),
      fact("newest id", info.last_generated_id || "–"),
      fact("retention", retention ? retentionText(retention) : "none"));
    historyCharts(history, charts);
    const policies = new Map(subscriptions.subscriptions.map((s) => [s.group, s.policy]));
    groups.replaceChildren(...groupList.groups.map((g) => {
      const policy = policies.get(g.name);
      return h("tr", { testid: "group-row", dataset: { group: g.name } },
        h("td", {}, link(`#/group/${enc(stream)}/${enc(g.name)}`, g.name)),
        h("td", { class: "num" }, num(g.consumers)),
        h("td", { class: "num", testid: "group-pending" }, num(g.pending)),
        h("td", { class: "num", testid: "group-lag" }, g.lag === undefined || g.lag === null ? "unknown" : num(g.lag)),
        h("td", { class: "id" }, g.last_delivered_id),
        h("td", {}, policy ? policySummary(policy) : h("span", { class: "muted" }, "none stored (server defaults)")));
    }));
    if (groupList.groups.length === 0) groups.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No groups.")));
  }
  await refresh();
  return refresh;
}

function policySummary(policy) {
  const parts = [];
  if (policy.paused) parts.push(h("span", { class: "badge paused", testid: "paused" }, "paused"));
  if (policy.ordered) parts.push(h("span", { class: "badge" }, "ordered"));
  const text = [];
  if (policy.ack_deadline_ms) text.push(`deadline ${duration(policy.ack_deadline_ms)}`);
  if (policy.max_deliveries) text.push(`dead letter after ${policy.max_deliveries}`);
  if (policy.dead_letter_stream) text.push(`to ${policy.dead_letter_stream}`);
  if (policy.max_in_flight) text.push(`in flight ≤ ${policy.max_in_flight}`);
  if (policy.filter) text.push(`filter ${policy.filter}`);
  return [...parts, " ", text.join(", ")];
}

function selectionTable(testid, head, rows, rowFor) {
  const selected = new Set();
  const body = h("tbody");
  const all = h("input", {
    type: "checkbox", title: "select all", onchange: () => {
      for (const box of body.querySelectorAll("input[type=checkbox]")) {
        box.checked = all.checked;
        box.dispatchEvent(new Event("change"));
      }
    },
  });
  for (const row of rows) {
    const box = h("input", { type: "checkbox", dataset: { id: row.id } });
    const tr = rowFor(row, h("td", {}, box));
    box.addEventListener("change", () => {
      if (box.checked) selected.add(row.id);
      else selected.delete(row.id);
      tr.classList.toggle("selected", box.checked);
    });
    body.append(tr);
  }
  if (rows.length === 0) body.append(h("tr", {}, h("td", { colspan: head.length + 1, class: "muted" }, "Nothing here.")));
  const table = h("table", { testid }, h("thead", {}, h("tr", {}, h("th", {}, all), ...head.map((t) => h("th", {}, t)))), body);
  return { table, selected: () => rows.filter((r) => selected.has(r.id)) };
}

async function groupView(main, stream, group) {
  const { may } = await permissions([stream]);
  const canWrite = may("admin-write", stream);
  const canConsume = may("consume", stream);
  const [subscription, consumers, pending] = await Promise.all([
    admin("GetSubscription", { stream, group }).catch(() => null),
    admin("ListConsumers", { stream, group }),
    admin("ListPending", { stream, group, count: 200 }),
  ]);
  const reload = () => render(groupView, stream, group);
  const entryPanel = h("div", { testid: "entry" });
  const toolbar = h("div", { class: "toolbar" }, h("button", { type: "button", onclick: reload, testid: "refresh" }, "Refresh"));
  if (subscription && canWrite) {
    const paused = Boolean(subscription.policy?.paused);
    toolbar.append(h("button", {
      type: "button", testid: paused ? "resume" : "pause",
      onclick: () => act(paused ? "Resume subscription" : "Pause subscription",
        paused ? `Resume delivery to ${group}?` : `Pause ${group}? Members keep their connections and receive nothing until it is resumed.`,
        async () => { await admin("UpdateSubscription", { stream, group, policy: { paused: !paused } }); }, reload),
    }, paused ? "Resume" : "Pause"));
  }
  if (canWrite) {
    const target = h("input", { placeholder: "entry id, or a time (2026-12-01 09:00)", size: "30", testid: "seek-target" });
    toolbar.append(target, h("button", {
      type: "button", testid: "seek",
      onclick: () => {
        const value = target.value.trim();
        if (!value) return toast("Seek", "give an entry id or a time", { error: true });
        const isId = /^\d+(-\d+)?$/.test(value) || value === "$" || value === "0";
        const sinceMs = isId ? null : Date.parse(value);
        if (!isId && !Number.isFinite(sinceMs)) return toast("Seek", `${value} is neither an entry id nor a time`, { error: true });
        const request = isId ? { stream, group, after_id: value } : { stream, group, since_ms: sinceMs };
        act("Seek group", `Move ${group} to ${isId ? `after ${value}` : new Date(sinceMs).toISOString()}? Entries before it are not delivered again; pending ones stay pending.`,
          async () => { await admin("SeekSubscription", request); }, reload);
      },
    }, "Seek"));
  }
  const consumerRows = consumers.consumers.map((c) => h("tr", { testid: "consumer-row", dataset: { consumer: c.name } },
    h("td", {}, c.name),
    h("td", {}, h("span", { class: `badge ${c.role === "MEMBER" ? "member" : "parked"}` }, roleText(c.role))),
    h("td", { class: "num" }, num(c.pending)),
    h("td", { class: "num" }, c.role === "MEMBER" ? duration(c.idle_ms) : "–"),
    h("td", {}, canWrite && c.role === "MEMBER" ? h("button", {
      type: "button", class: "danger", testid: "delete-consumer",
      onclick: () => act("Delete consumer", `Delete ${c.name}? Its ${num(c.pending)} pending entries are dropped with it and can no longer be claimed: claim or hand them back first.`,
        async () => `${num((await admin("DeleteConsumer", { stream, group, consumer: c.name })).pending_dropped)} pending entries dropped`, reload),
    }, "Delete") : null)));
  const pendingTable = selectionTable("pending", ["Entry", "Owner", "State", "Idle", "Deliveries", "Due in"], pending.entries, (p, check) =>
    h("tr", { testid: "pending-row", dataset: { id: p.id } }, check,
      h("td", { class: "id" }, h("a", { href: "#", onclick: (e) => { e.preventDefault(); showEntry(entryPanel, stream, p.id); }, testid: "pending-id" }, p.id)),
      h("td", {}, p.consumer),
      h("td", {}, h("span", { class: `badge ${p.state === "DELIVERED" ? "" : "parked"}` }, stateText(p.state))),
      h("td", { class: "num" }, p.state === "DELIVERED" ? duration(p.idle_ms) : "–"),
      h("td", { class: "num" }, num(p.delivery_count)),
      h("td", { class: "num" }, p.due_in_ms === undefined || p.due_in_ms === null ? "–" : duration(p.due_in_ms))));
  const pendingTools = h("div", { class: "toolbar" });
  if (canWrite) {
    const to = h("input", { placeholder: "consumer to claim for", size: "22", testid: "claim-to" });
    pendingTools.append(to, h("button", {
      type: "button", testid: "claim",
      onclick: () => {
        const chosen = pendingTable.selected();
        if (!chosen.length || !to.value.trim()) return toast("Claim", "select entries and name the consumer", { error: true });
        act("Claim entries", `Give ${chosen.length} entries to ${to.value.trim()}? Their delivery count goes up by one.`,
          async () => `${(await admin("Claim", { stream, group, consumer: to.value.trim(), ids: chosen.map((p) => p.id), just_id: true })).claimed_ids.length} claimed`, reload);
      },
    }, "Claim selected"));
  }
  if (canConsume) {
    pendingTools.append(h("button", {
      type: "button", testid: "hand-back",
      onclick: () => {
        const chosen = pendingTable.selected().filter((p) => p.state === "DELIVERED");
        if (!chosen.length) return toast("Hand back", "select entries a member holds (delivered); parked ones are already back with the group", { error: true });
        act("Hand back entries", `Return ${chosen.length} entries to the group, to be delivered again now?`, async () => {
          const byOwner = new Map();
          for (const p of chosen) byOwner.set(p.consumer, [...(byOwner.get(p.consumer) || []), p.id]);
          let returned = 0;
          for (const [consumer, ids] of byOwner) {
            returned += (await broker("Nack", { stream, group, consumer, ids, delay_ms: 0 })).ids.length;
          }
          return `${returned} handed back`;
        }, reload);
      },
    }, "Hand back selected"));
  }
  main.replaceChildren(
    h("h2", {}, "Group ", h("code", {}, group), " on ", link(`#/stream/${enc(stream)}`, stream)),
    h("p", {}, subscription ? policySummary(subscription.policy || {}) : h("span", { class: "muted" }, "No stored subscription: members use their request's settings and the server's defaults.")),
    toolbar,
    h("h3", {}, "Consumers"),
    h("table", { testid: "consumers" }, h("thead", {}, h("tr", {}, h("th", {}, "Consumer"), h("th", {}, "Role"),
      h("th", { class: "num" }, "Pending"), h("th", { class: "num" }, "Idle"), h("th", {}, ""))), h("tbody", {}, consumerRows)),
    h("h3", {}, `Pending entries (${num(pending.entries.length)} shown)`),
    pendingTools, pendingTable.table, entryPanel);
}

const roleText = (role) => ({ MEMBER: "member", PARKED_MESSAGES: "parked (nacked, handed back)", WAITING_FOR_KEY_MESSAGES: "waiting for key" }[role] || role);
const stateText = (state) => ({ DELIVERED: "delivered", PARKED: "parked", WAITING_FOR_KEY: "waiting for key" }[state] || state);

// ---------------------------------------------------------------- messages

const FORMATS = ["text", "json", "hex"];

function renderValue(bytes, format) {
  const data = Uint8Array.from(bytes || []);
  if (format === "hex") return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join(" ");
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(data);
  } catch (_) {
    return `(not UTF-8) ${Array.from(data, (b) => b.toString(16).padStart(2, "0")).join(" ")}`;
  }
  if (format === "json") {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch (_) {
      return `(not JSON) ${text}`;
    }
  }
  return text;
}

function fieldsCell(fields, format) {
  return h("td", {}, fields.map((f) => h("div", {}, h("b", {}, f.name), ": ", h("pre", { class: "value" }, renderValue(f.value, format)))));
}

async function showEntry(panel, stream, id) {
  try {
    const found = await admin("QueryMessages", { stream, min_id: id, max_id: id, count: 1 });
    const entry = found.entries[0];
    panel.replaceChildren(h("h3", {}, "Entry ", h("code", {}, id)),
      entry ? h("table", { testid: "entry-fields" }, h("tbody", {}, h("tr", {}, fieldsCell(entry.fields, "text"))))
        : h("p", { class: "muted" }, "No longer in the stream (trimmed or deleted): only its id is pending."));
  } catch (err) {
    showError("Cannot read the entry", err);
  }
}

async function messagesView(main, stream) {
  const from = h("input", { placeholder: "from id (oldest)", size: "18", testid: "from" });
  const to = h("input", { placeholder: "to id (newest)", size: "18", testid: "to" });
  const count = h("input", { type: "number", value: "50", min: "1", max: "1000", size: "5" });
  const order = h("select", {}, h("option", { value: "newest" }, "newest first"), h("option", { value: "oldest" }, "oldest first"));
  const format = h("select", { testid: "format" }, FORMATS.map((f) => h("option", { value: f }, f)));
  const body = h("tbody");
  async function query() {
    const found = await admin("QueryMessages", {
      stream, min_id: from.value.trim(), max_id: to.value.trim(), count: Number(count.value) || 50, reverse: order.value === "newest",
    });
    body.replaceChildren(...found.entries.map((e) => h("tr", { testid: "message-row", dataset: { id: e.id } },
      h("td", { class: "id" }, e.id), h("td", { class: "mono" }, idTime(e.id)), fieldsCell(e.fields, format.value))));
    if (found.entries.length === 0) body.append(h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No entries in this range.")));
  }
  const run = () => query().catch((err) => showError("Query failed", err));
  format.addEventListener("change", run);
  main.replaceChildren(
    h("h2", {}, "Messages of ", link(`#/stream/${enc(stream)}`, stream)),
    h("form", { class: "toolbar", onsubmit: (e) => { e.preventDefault(); run(); } },
      from, to, count, order, format, h("button", { type: "submit", class: "primary" }, "Show")),
    h("table", { testid: "messages" }, h("thead", {}, h("tr", {}, h("th", {}, "Id"), h("th", {}, "Time (UTC)"), h("th", {}, "Fields"))), body));
  await query();
}

// ---------------------------------------------------------------- dead letters

async function deadLettersIndex(main) {
  const page = await admin("ListStreams", { pattern: "*dlq*", page_size: 500 });
  const names = [...new Set(page.streams)].sort();
  main.replaceChildren(h("h2", {}, "Dead-letter streams"),
    names.length ? h("ul", { testid: "dead-letter-streams" }, names.map((n) => h("li", {}, link(`#/dead-letters/${enc(n)}`, n))))
      : h("p", { class: "muted" }, "No dead-letter streams (names containing “dlq”)."),
    h("form", { class: "toolbar", onsubmit: (e) => { e.preventDefault(); location.hash = `#/dead-letters/${enc(e.target.elements.name.value.trim())}`; } },
      h("input", { name: "name", placeholder: "another dead-letter stream", size: "30" }), h("button", { type: "submit" }, "Open")));
}

async function deadLettersView(main, dlq) {
  const [{ may }, listed] = await Promise.all([permissions([dlq]), admin("ListDeadLetters", { dead_letter_stream: dlq, count: 200 })]);
  const reload = () => render(deadLettersView, dlq);
  const letters = listed.dead_letters;
  const table = selectionTable("dead-letters", ["Dead letter", "From", "Original id", "Group", "Deliveries", "Reason", "Fields"], letters, (d, check) =>
    h("tr", { testid: "dead-letter-row", dataset: { id: d.id, origin: d.stream } }, check,
      h("td", { class: "id" }, d.id, h("div", { class: "muted" }, idAge(d.id), " ago")),
      h("td", {}, link(`#/stream/${enc(d.stream)}`, d.stream)),
      h("td", { class: "id" }, d.original_id),
      h("td", {}, d.group),
      h("td", { class: "num" }, num(d.delivery_count)),
      h("td", {}, d.reason),
      fieldsCell(d.fields, "text")));
  const tools = h("div", { class: "toolbar" });
  if (may("admin-write", dlq)) {
    const replay = (chosen) => act("Replay dead letters",
      `Put ${chosen.length} dead letters back on the streams they came from, as new messages? Each leaves ${dlq} in the same step.`,
      async () => {
        const replayed = (await admin("ReplayDeadLetters", { dead_letter_stream: dlq, ids: chosen.map((d) => d.id) })).replayed;
        return `${replayed.length} replayed: ${replayed.map((r) => `${r.stream} ${r.id}`).join(", ")}`;
      }, reload);
    tools.append(
      h("button", { type: "button", class: "primary", testid: "replay-selected", onclick: () => {
        const chosen = table.selected();
        return chosen.length ? replay(chosen) : toast("Replay", "select dead letters first", { error: true });
      } }, "Replay selected"),
      h("button", { type: "button", testid: "replay-all", disabled: letters.length === 0, onclick: () => replay(letters) }, `Replay all ${letters.length} listed`));
  }
  main.replaceChildren(h("h2", {}, "Dead letters in ", h("code", {}, dlq)),
    h("p", { class: "muted" }, "Replaying needs admin-write here and produce on the stream each letter goes back to; the broker checks both."),
    tools, table.table);
}

// ---------------------------------------------------------------- topics

async function topicsView(main, topic) {
  const form = h("form", { class: "toolbar", onsubmit: (e) => { e.preventDefault(); location.hash = `#/topics/${enc(e.target.elements.topic.value.trim())}`; } },
    h("input", { name: "topic", placeholder: "topic name", value: topic || "", size: "24", testid: "topic-name" }), h("button", { type: "submit" }, "Describe"));
  main.replaceChildren(h("h2", {}, "Topics"), h("p", { class: "muted" }, "A topic is N partition streams (Admin.CreateTopic)."), form);
  if (!topic) return;
  const info = await admin("DescribeTopic", { topic });
  main.append(h("table", { testid: "partitions" },
    h("thead", {}, h("tr", {}, h("th", { class: "num" }, "Partition"), h("th", {}, "Stream"), h("th", { class: "num" }, "Length"), h("th", {}, "Groups (lag / pending)"))),
    h("tbody", {}, info.partitions.map((p) => h("tr", {},
      h("td", { class: "num" }, p.index), h("td", {}, link(`#/stream/${enc(p.stream)}`, p.stream)), h("td", { class: "num" }, num(p.length)),
      h("td", {}, p.groups.map((g) => `${g.name}: ${g.lag === undefined || g.lag === null ? "unknown" : num(g.lag)} / ${num(g.pending)}`).join("; ")))))));
}

// ---------------------------------------------------------------- start

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.nav === parts[0]);
  switch (parts[0]) {
    case "stream": return render(streamView, parts[1]);
    case "group": return render(groupView, parts[1], parts[2]);
    case "messages": return render(messagesView, parts[1]);
    case "dead-letters": return parts[1] ? render(deadLettersView, parts[1]) : render(deadLettersIndex);
    case "topics": return render(topicsView, parts[1]);
    default: return render(streamsView);
  }
}

async function start() {
  let root;
  try {
    root = await loadProtos(".");
  } catch (err) {
    document.getElementById("view").replaceChildren(h("p", { class: "error" }, `Cannot load the API description: ${err.message}`));
    return;
  }
  client = new Client(root, sessionStorage.getItem(TOKEN_KEY) || "");
  // The same client as the page's, for calls it has no button for (from the browser's devtools).
  window.streamgate = { admin, broker };
  document.getElementById("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    client.token = "";
    signIn("Signed out.");
  });
  window.addEventListener("hashchange", route);
  try {
    showWho(await admin("DescribeCaller", { streams: [] }));
  } catch (err) {
    if (err instanceof GrpcError && err.code === 16) return signIn(client.token ? err.message : "");
    showError("The broker does not answer", err);
  }
  route();
}

start();
