// Small line charts as SVG, drawn here: no library, nothing fetched.
import { h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 160;
const HEIGHT = 48;

function svg(tag, attributes) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  return element;
}

// A polyline per run of known values (a step without data breaks the line), a dot per value.
function lines(points, field, top, className) {
  const step = points.length > 1 ? (WIDTH - 4) / (points.length - 1) : 0;
  const runs = [];
  const dots = [];
  let run = [];
  points.forEach((point, index) => {
    const value = point[field];
    if (value === null || value === undefined) {
      if (run.length) runs.push(run);
      run = [];
      return;
    }
    const x = (2 + index * step).toFixed(1);
    const y = (HEIGHT - 2 - (Math.min(value, top) / top) * (HEIGHT - 4)).toFixed(1);
    run.push(`${x},${y}`);
    dots.push(svg("circle", { class: className, cx: x, cy: y, r: 1.6 }));
  });
  if (run.length) runs.push(run);
  const drawn = runs.filter((r) => r.length > 1);
  return [...drawn.map((r) => svg("polyline", { class: className, points: r.join(" ") })), ...dots];
}

// `fields`: [[field, css class], ...] drawn on one scale; `top`: the scale's maximum.
export function chart(title, series, fields, top, label) {
  const picture = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    preserveAspectRatio: "none",
    role: "img",
  });
  const name = svg("title", {});
  name.textContent = `${title}: ${label}`;
  picture.append(name);
  for (const [field, className] of fields) picture.append(...lines(series.points, field, top, className));
  return h("figure", { class: "chart" }, picture, h("figcaption", {}, `${title} · ${label}`));
}

export function ttfbChart(title, series) {
  const values = series.points.flatMap((p) => [p.ttfb_p50_ms, p.ttfb_p95_ms]).filter((v) => v !== null);
  const top = Math.max(100, ...values);
  const p50 = series.ttfb_p50_ms === null ? "–" : `${series.ttfb_p50_ms} ms`;
  const p95 = series.ttfb_p95_ms === null ? "–" : `${series.ttfb_p95_ms} ms`;
  return chart(title, series, [["ttfb_p50_ms", "p50"], ["ttfb_p95_ms", "p95"]], top, `p50 ≤ ${p50}, p95 ≤ ${p95}`);
}

export function errorChart(title, series) {
  const rate = series.error_rate === null ? "–" : `${(series.error_rate * 100).toFixed(1)}%`;
  return chart(title, series, [["error_rate", "rate"]], 1, `errors ${rate} of ${series.attempts}`);
}
