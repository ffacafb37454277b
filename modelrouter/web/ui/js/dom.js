// Building the page with text nodes only: what the gateway returns is never parsed as HTML.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  const nodes = children.flat().filter((c) => c !== null && c !== undefined);
  element.append(...nodes.map((c) => (c instanceof Node ? c : String(c))));
  return element;
}

export function fill(parent, ...children) {
  parent.replaceChildren(...children.flat());
}

export function fact(term, value, attributes = {}) {
  return h("div", attributes, h("dt", {}, term), h("dd", {}, value));
}

export function usd(value) {
  return value === null || value === undefined ? "–" : `$${Number(value).toFixed(6)}`;
}

export function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`;
}

export function clock(value) {
  if (value === null || value === undefined) return "–";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return date.toLocaleTimeString([], { hour12: false });
}

export function when(value) {
  if (value === null || value === undefined) return "–";
  return new Date(value).toLocaleString([], { hour12: false });
}
