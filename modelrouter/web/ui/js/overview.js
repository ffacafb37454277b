// The admin overview: deployments with their state and charts, cache, history, last errors.
import { call } from "./api.js";
import { errorChart, ttfbChart } from "./charts.js";
import { clock, fact, fill, h, percent } from "./dom.js";

const STATES = { ok: "ok", blacklisted: "blacklisted", half_open: "half-open", down: "down" };

function scopeNote(scope) {
  return scope === "fleet" ? "fleet-wide" : "this replica";
}

// Fleet-wide figures are this replica's now and the others' as they published them (every 2 s).
function recentNote(scope) {
  return scope === "fleet" ? "fleet-wide, other replicas' up to 2 s old" : "this replica";
}

function stateText(deployment) {
  const state = STATES[deployment.state] || deployment.state;
  if (deployment.state !== "blacklisted") return state;
  const left = Math.max(0, Math.round((Date.parse(deployment.blacklisted_until) - Date.now()) / 1000));
  return `${state} until ${clock(deployment.blacklisted_until)} (${left} s)`;
}

function card(deployment, scope) {
  const budget =
    deployment.rate_limit === null
      ? "no rate limit"
      : `rate budget used ${percent(deployment.rate_budget_used)} of ${deployment.rate_limit}/min (${scopeNote(scope.rate_budget)})`;
  const reason = deployment.last_reason ? `, last failure: ${deployment.last_reason}` : "";
  return h(
    "article",
    { class: "card", "data-deployment": deployment.name, "data-state": deployment.state },
    h(
      "h4",
      {},
      deployment.name,
      h("span", { class: `badge state-${deployment.state}`, "data-role": "state" }, stateText(deployment)),
    ),
    h(
      "p",
      { class: "facts" },
      `in flight ${deployment.in_flight} (${scopeNote(scope.in_flight)}) · ${budget} · ${deployment.failures} consecutive failures${reason}`,
    ),
    h(
      "div",
      { class: "charts" },
      ttfbChart("TTFB 5 min", deployment.last_5m),
      ttfbChart("TTFB 60 min", deployment.last_60m),
      errorChart("Errors 5 min", deployment.last_5m),
      errorChart("Errors 60 min", deployment.last_60m),
    ),
  );
}

function errorRow(error) {
  return h(
    "tr",
    {},
    h("td", {}, clock(error.at)),
    h("td", {}, error.route),
    h("td", {}, error.status),
    h("td", {}, error.type || "–"),
    h("td", {}, error.provider || "–"),
    h("td", {}, error.model || "–"),
    h("td", {}, error.attempts),
    h("td", {}, error.client),
    h("td", {}, error.request_id),
  );
}

export async function showOverview() {
  const [overview, errors] = await Promise.all([
    call("GET", "/admin/overview"),
    call("GET", "/admin/errors"),
  ]);
  const scope = overview.scope;
  const cache = overview.cache;
  fill(
    document.getElementById("summary"),
    fact("State", overview.state_backend),
    fact("Requests in flight", `${overview.requests_in_flight} (${scopeNote(scope.in_flight)})`),
    fact(
      "Cache hit ratio",
      cache.mode === "off" ? "cache off" : `${percent(cache.hit_ratio)} of ${cache.hits + cache.misses} (${scopeNote(scope.cache)})`,
      { id: "cache-ratio" },
    ),
    fact("History", overview.history, { id: "history-status" }),
    fact("Deployment health", scopeNote(scope.health)),
    fact("Charts", `${recentNote(scope.charts)}; 10 s and 1 min steps`, { id: "charts-scope" }),
  );
  fill(
    document.getElementById("deployments"),
    overview.deployments.map((d) => card(d, scope)),
  );
  document.getElementById("errors-scope").textContent = `(${recentNote(errors.scope)})`;
  const rows = errors.data.map(errorRow);
  fill(
    document.querySelector("#errors tbody"),
    rows.length ? rows : [h("tr", {}, h("td", { colspan: 9 }, "no errors"))],
  );
}
