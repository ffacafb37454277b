// A client key's own page: its spend (GET /v1/spend), its requests and errors (GET /v1/history).
import { call, routes } from "./api.js";
import { fact, fill, h, usd, when } from "./dom.js";

function requestRow(record) {
  return h(
    "tr",
    { "data-status": record.status },
    h("td", {}, when(record.created_at)),
    h("td", {}, record.route),
    h("td", {}, record.model || "–"),
    h("td", {}, record.status),
    h("td", {}, record.error_type || "–"),
    h("td", {}, record.cost_usd === null ? "–" : record.cost_usd.toFixed(6)),
    h("td", {}, record.request_id),
  );
}

function spendFacts(spend, records) {
  if (spend === null) {
    // No GET /v1/spend on this gateway: what the listed requests cost, said as such.
    const listed = records.reduce((sum, r) => sum + (r.cost_usd || 0), 0);
    return [fact("Spend of the requests below", usd(listed), { id: "usage-spend" })];
  }
  // One row for the key (an object, or the first of a list).
  const own = Array.isArray(spend.data) ? spend.data[0] || {} : spend;
  const budget = own.budget_usd;
  return [
    fact("Spend", usd(own.spend_usd ?? 0), { id: "usage-spend" }),
    fact("This period", budget ? `${usd(own.period_spend_usd ?? 0)} of ${usd(budget)}` : usd(own.period_spend_usd ?? 0)),
    fact("Resets", when(own.reset_at)),
    fact("Requests (all time)", own.requests ?? "–"),
  ];
}

export async function showUsage() {
  const served = await routes();
  const [spend, history] = await Promise.all([
    served.has("GET /v1/spend") ? call("GET", "/v1/spend") : null,
    served.has("GET /v1/history") ? call("GET", "/v1/history?limit=50").catch((e) => (e.status === 404 ? null : Promise.reject(e))) : null,
  ]);
  const records = history ? history.data : [];
  const failed = records.filter((r) => r.status >= 400 || r.error_type);
  fill(
    document.getElementById("usage-summary"),
    ...spendFacts(spend, records),
    fact("Last requests", history ? records.length : "history off", { id: "usage-requests-count" }),
    fact("Of which errors", history ? failed.length : "–", { id: "usage-errors-count" }),
  );
  document.getElementById("usage-note").textContent = history
    ? "The last 50 requests made with this key."
    : "This gateway keeps no history (DATABASE_URL is not set).";
  fill(
    document.querySelector("#usage-requests tbody"),
    records.length ? records.map(requestRow) : [h("tr", {}, h("td", { colspan: 7 }, "no requests"))],
  );
}
