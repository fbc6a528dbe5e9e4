// The console in a real browser: Debian's Chromium, driven by playwright-core, against a broker
// that tests/console.rs started (embedded store, principals file, console on). Each step does
// what an operator would and checks what the page shows; screenshots go to SCREENSHOTS.
//
// Environment: CONSOLE_URL, SCREENSHOTS (a directory), ADMIN_TOKEN (everything), VIEWER_TOKEN
// (admin-read only), ONCALL_TOKEN (admin-read, admin-write on *:dlq, no produce on orders),
// STREAM and GROUP (set up by the Rust side: pending entries held by a member, two dead letters
// in STREAM:dlq). Prints one JSON line of what it saw; exits non-zero on the first failed check.

const path = require("node:path");
const assert = require("node:assert/strict");
const { chromium } = require("playwright-core");

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (tests/console.rs sets it)`);
  return value;
};
const url = env("CONSOLE_URL");
const shots = env("SCREENSHOTS");
const stream = env("STREAM");
const group = env("GROUP");
const dlq = `${stream}:dlq`;
const seen = {};

const CHROMIUM_FLAGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

async function signIn(page, token) {
  await page.goto(`${url}?refresh=700#/streams`);
  await page.getByTestId("login").waitFor({ state: "visible" });
  await page.getByTestId("token").fill(token);
  await page.getByTestId("sign-in").click();
  await page.getByTestId("login").waitFor({ state: "hidden" });
}

async function signOut(page) {
  await page.locator("#sign-out").click();
  await page.getByTestId("login").waitFor({ state: "visible" });
}

/** The number after "<series> now:" in a chart's caption. */
async function chartNow(page, chart, series) {
  const text = await chart.locator(`[data-series="${series}"]`).textContent();
  const match = /now: (-?[\d.]+|unknown)/.exec(text);
  assert.ok(match, `chart caption: ${text}`);
  return match[1] === "unknown" ? null : Number(match[1]);
}

async function main() {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: CHROMIUM_FLAGS });
  const problems = [];
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") problems.push(`${message.type()}: ${message.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

  // 1. Authentication: a wrong token is refused with the server's words, the right one works.
  await page.goto(`${url}#/streams`);
  await page.getByTestId("login").waitFor({ state: "visible" });
  await page.getByTestId("token").fill("not-a-token");
  await page.getByTestId("sign-in").click();
  await page.getByTestId("login-error").filter({ hasText: "UNAUTHENTICATED" }).waitFor();
  seen.wrong_token = await page.getByTestId("login-error").textContent();
  await page.getByTestId("token").fill(env("ADMIN_TOKEN"));
  await page.getByTestId("sign-in").click();
  await page.getByTestId("login").waitFor({ state: "hidden" });

  // 2. The streams view lists what the test produced.
  const row = page.locator(`[data-testid=stream-row][data-stream="${stream}"]`);
  await row.waitFor();
  seen.listed_length = Number((await row.getByTestId("stream-length").textContent()).replace(/,/g, ""));
  assert.ok(seen.listed_length > 0, "the stream has entries");
  await page.locator(`[data-testid=stream-row][data-stream="${dlq}"]`).waitFor();
  await shot("1-streams");

  // 3. The group's lag chart follows produces made from this page (gRPC-Web Produce).
  await page.goto(`${url}?refresh=700#/stream/${encodeURIComponent(stream)}`);
  const chart = page.locator(`[data-testid=chart-group][data-group="${group}"]`);
  await chart.locator("[data-series=lag]").waitFor();
  const lagBefore = await chartNow(page, chart, "lag");
  const produced = await page.evaluate(async (s) => {
    const fields = [{ name: "source", value: Array.from(new TextEncoder().encode("browser")) }];
    const answer = await window.streamgate.broker("Produce", { stream: s, messages: [{ fields }, { fields }, { fields }] });
    return answer.ids;
  }, stream);
  assert.equal(produced.length, 3, "Produce from the browser answered three ids");
  seen.produced_from_browser = produced;
  const deadline = Date.now() + 15000;
  let lagAfter = lagBefore;
  while (lagAfter !== lagBefore + 3) {
    assert.ok(Date.now() < deadline, `the lag chart stayed at ${lagAfter} (was ${lagBefore}, expected ${lagBefore + 3})`);
    await page.waitForTimeout(300);
    lagAfter = await chartNow(page, chart, "lag");
  }
  seen.lag_chart = { before: lagBefore, after: lagAfter, points: Number(await chart.getAttribute("data-points")) };
  assert.ok(seen.lag_chart.points >= 2, "the chart has several samples");
  await shot("2-stream-lag-chart");

  // 4. A pending entry opens with its fields.
  await page.goto(`${url}#/group/${encodeURIComponent(stream)}/${encodeURIComponent(group)}`);
  const pendingRow = page.getByTestId("pending-row").first();
  await pendingRow.waitFor();
  seen.pending_rows = await page.getByTestId("pending-row").count();
  await pendingRow.getByTestId("pending-id").click();
  await page.getByTestId("entry-fields").waitFor();
  seen.pending_entry = await page.getByTestId("entry-fields").textContent();
  assert.match(seen.pending_entry, /n: \d+/, "the entry's fields are shown");
  await shot("3-group-pending");

  // 4b. Actions on the group, each confirmed: pause (and resume), claim an entry for another
  //     consumer, hand one back to the group.
  await page.getByTestId("pause").click();
  await page.getByTestId("confirm-ok").click();
  await page.getByTestId("resume").waitFor();
  seen.paused = true;
  await page.getByTestId("resume").click();
  await page.getByTestId("confirm-ok").click();
  await page.getByTestId("pause").waitFor();
  const first = page.getByTestId("pending-row").first();
  const claimedId = await first.getAttribute("data-id");
  await first.locator("input[type=checkbox]").check();
  await page.getByTestId("claim-to").fill("worker-2");
  await page.getByTestId("claim").click();
  await page.getByTestId("confirm-ok").click();
  const claimedRow = page.locator(`[data-testid=pending-row][data-id="${claimedId}"]`);
  await claimedRow.filter({ hasText: "worker-2" }).waitFor();
  seen.claimed = claimedId;
  await claimedRow.locator("input[type=checkbox]").check();
  await page.getByTestId("hand-back").click();
  await page.getByTestId("confirm-ok").click();
  await claimedRow.filter({ hasText: "parked" }).waitFor();
  seen.handed_back = claimedId;
  await shot("3b-group-actions");

  // 5. A read-only principal is offered no action, and a call it makes anyway is refused.
  await signOut(page);
  await signIn(page, env("VIEWER_TOKEN"));
  await page.goto(`${url}#/stream/${encodeURIComponent(stream)}`);
  await page.getByTestId("groups").waitFor();
  assert.equal(await page.getByTestId("trim").count(), 0, "no Trim for a viewer");
  await page.goto(`${url}#/group/${encodeURIComponent(stream)}/${encodeURIComponent(group)}`);
  await page.getByTestId("pending").waitFor();
  for (const action of ["pause", "seek", "claim", "hand-back", "delete-consumer"]) {
    assert.equal(await page.getByTestId(action).count(), 0, `no ${action} for a viewer`);
  }
  await page.goto(`${url}#/dead-letters/${encodeURIComponent(dlq)}`);
  await page.getByTestId("dead-letters").waitFor();
  assert.equal(await page.getByTestId("replay-selected").count(), 0, "no Replay for a viewer");
  seen.viewer_trim = await page.evaluate(async (s) => {
    try {
      await window.streamgate.admin("TrimStream", { stream: s, trim: { max_len: 0 } });
      return "allowed";
    } catch (err) {
      return err.toString();
    }
  }, stream);
  assert.match(seen.viewer_trim, /^PERMISSION_DENIED: .*lacks `admin-write` on stream/);
  await shot("4-viewer");

  // 6. On call may repair the dead-letter stream but not produce to the stream the letters
  //    came from: Replay is offered, and the server's refusal is shown.
  await signOut(page);
  await signIn(page, env("ONCALL_TOKEN"));
  await page.goto(`${url}#/dead-letters/${encodeURIComponent(dlq)}`);
  await page.getByTestId("dead-letter-row").first().waitFor();
  const lettersBefore = await page.getByTestId("dead-letter-row").count();
  await page.getByTestId("dead-letter-row").first().locator("input[type=checkbox]").check();
  await page.getByTestId("replay-selected").click();
  await page.getByTestId("confirm-ok").click();
  const refusal = page.getByTestId("toast-error").last();
  await refusal.waitFor();
  seen.oncall_replay = await refusal.textContent();
  assert.match(seen.oncall_replay, /PERMISSION_DENIED: principal `oncall` lacks `produce` on stream/);
  await page.getByTestId("dead-letter-row").first().waitFor();
  assert.equal(await page.getByTestId("dead-letter-row").count(), lettersBefore, "nothing was replayed");
  await shot("5-oncall-refused");

  // 7. The admin replays one dead letter and sees it back on its stream, as a new message.
  await signOut(page);
  await signIn(page, env("ADMIN_TOKEN"));
  await page.goto(`${url}#/dead-letters/${encodeURIComponent(dlq)}`);
  const letter = page.getByTestId("dead-letter-row").first();
  await letter.waitFor();
  const replayedText = await letter.locator("pre.value").first().textContent();
  await letter.locator("input[type=checkbox]").check();
  await page.getByTestId("replay-selected").click();
  await page.getByTestId("confirm-ok").click();
  const done = page.getByTestId("toast").filter({ hasText: "1 replayed" });
  await done.waitFor();
  seen.replay_toast = await done.textContent();
  const newId = /replayed: \S+ (\d+-\d+)/.exec(seen.replay_toast)[1];
  await page.getByTestId("dead-letter-row").first().waitFor();
  assert.equal(await page.getByTestId("dead-letter-row").count(), lettersBefore - 1, "one dead letter left the stream");
  await page.goto(`${url}#/messages/${encodeURIComponent(stream)}`);
  const arrived = page.locator(`[data-testid=message-row][data-id="${newId}"]`);
  await arrived.waitFor();
  seen.replayed = { id: newId, fields: await arrived.textContent() };
  assert.ok(seen.replayed.fields.includes(replayedText), `the replayed message carries ${replayedText}`);
  await page.getByTestId("format").selectOption("hex");
  await arrived.locator("pre.value").first().waitFor();
  seen.hex = await arrived.locator("pre.value").first().textContent();
  assert.match(seen.hex, /^[0-9a-f]{2}( [0-9a-f]{2})*$/);
  await shot("6-replayed");

  await browser.close();
  // The only console errors allowed are none at all.
  seen.console_problems = problems;
  assert.deepEqual(problems, [], "the page logged errors or warnings");
  console.log(JSON.stringify(seen));
}

main().catch((err) => {
  console.error(err.stack || String(err));
  console.log(JSON.stringify(seen));
  process.exit(1);
});
