// Keys: spend against budget, reset time, revoke (DELETE with the admin key, in two clicks).
import { call, routes } from "./api.js";
import { fill, h, usd, when } from "./dom.js";

export const PAGE_SIZE = 50; // keys a page, newest first (the admin API's cursor pages)
const confirming = new Set(); // key ids whose revoke button asks for its second click
let refresh = () => {};
// The cursors of the pages shown so far: cursors[i] opens page i + 1 (null: the first).
const cursors = [null];
let following = null; // the next (older) page's cursor, as the last answer gave it

function pager() {
  const nav = document.getElementById("keys-pages");
  const newer = nav.querySelector("[data-action=newer]");
  const older = nav.querySelector("[data-action=older]");
  if (!nav.dataset.wired) {
    nav.dataset.wired = "1";
    newer.addEventListener("click", () => {
      if (cursors.length > 1) cursors.pop();
      refresh();
    });
    older.addEventListener("click", () => {
      if (following) cursors.push(following);
      refresh();
    });
  }
  newer.disabled = cursors.length === 1;
  older.disabled = !following;
  nav.querySelector("[data-role=page]").textContent = `page ${cursors.length}`;
}

async function revoke(key, button) {
  if (!confirming.has(key.id)) {
    confirming.add(key.id);
    button.textContent = "Confirm revoke";
    button.className = "confirm";
    return;
  }
  confirming.delete(key.id);
  button.disabled = true;
  await call("DELETE", `/admin/keys/${encodeURIComponent(key.id)}`);
  await refresh();
}

function spendCell(spend, key) {
  if (!spend) return h("td", {}, "–");
  const budget = key.budget_usd;
  const used = spend.period_spend_usd ?? 0;
  if (budget === null || budget === undefined) return h("td", { "data-role": "spend" }, usd(used));
  return h(
    "td",
    { "data-role": "spend" },
    h("meter", { min: 0, max: budget, value: Math.min(used, budget), high: budget * 0.8 }),
    ` ${usd(used)} of ${usd(budget)}`,
  );
}

function row(key, spend) {
  const revoked = key.status === "revoked";
  const asking = confirming.has(key.id);
  const button = h(
    "button",
    {
      type: "button",
      class: asking ? "confirm" : "danger",
      "data-action": "revoke",
      disabled: revoked,
    },
    revoked ? "Revoked" : asking ? "Confirm revoke" : "Revoke",
  );
  if (!revoked) button.addEventListener("click", () => revoke(key, button).catch(refresh.fail));
  const budget = key.budget_usd === null ? "none" : `${usd(key.budget_usd)} / ${key.budget_period}`;
  return h(
    "tr",
    { "data-key": key.id, "data-status": key.status },
    h("td", {}, key.name),
    h("td", {}, key.id),
    h("td", {}, key.team || "–"),
    h("td", { "data-role": "status" }, key.status),
    spendCell(spend, key),
    h("td", {}, budget),
    h("td", { "data-role": "resets" }, when((spend && spend.reset_at) || key.budget_resets_at)),
    h("td", { "data-role": "total" }, spend ? usd(spend.spend_usd ?? 0) : "–"),
    h("td", { "data-role": "requests" }, spend ? spend.requests ?? 0 : "–"),
    h("td", {}, button),
  );
}

// What the spend columns count: the spend ledger of every replica (GET /admin/spend, this
// month by default), its rows written and those still waiting in Redis, unless Redis did not
// answer (`uncounted_rows` null) or holds more than a report reads.
function spendNote(spend) {
  if (!spend) return "This gateway has no /admin/spend: spend is not shown.";
  const note = "Spend this month, fleet-wide (written, and waiting in Redis).";
  const waiting = spend.uncounted_rows;
  if (waiting === null) return `${note} Redis did not answer: spend waiting there is not counted.`;
  if (waiting > 0) return `${note} ${waiting} rows waiting in Redis are not counted yet.`;
  return note;
}

export async function showKeys(again, fail) {
  refresh = again;
  refresh.fail = fail;
  const served = await routes();
  const withSpend = served.has("GET /admin/spend");
  const cursor = cursors[cursors.length - 1];
  const query = `limit=${PAGE_SIZE}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "");
  const [page, spend] = await Promise.all([
    call("GET", `/admin/keys?${query}`),
    withSpend ? call("GET", "/admin/spend?group_by=key") : null,
  ]);
  const byKey = new Map(((spend && spend.data) || []).map((r) => [r.group, r]));
  document.getElementById("keys-note").textContent = spendNote(withSpend ? spend : null);
  following = page.next_cursor || null;
  pager();
  const rows = page.data.map((key) => row(key, withSpend ? byKey.get(key.id) || {} : null));
  fill(
    document.querySelector("#keys tbody"),
    rows.length ? rows : [h("tr", {}, h("td", { colspan: 10 }, "no keys"))],
  );
}
