// The key this tab signed in with: in sessionStorage (gone with the tab), sent as a Bearer
// header, never in a URL or a cookie.
const KEY = "modelrouter.key";
const ROLE = "modelrouter.role";

export const session = {
  key: () => sessionStorage.getItem(KEY),
  role: () => sessionStorage.getItem(ROLE),
  save(key, role) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(ROLE, role);
  },
  clear() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ROLE);
  },
};

export class ApiError extends Error {
  constructor(status, body, requestId) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type || error.code || null;
    this.requestId = error.request_id || requestId;
  }
}

// One call to the gateway with the tab's key (or `key`, to check one before keeping it).
export async function call(method, path, key = session.key()) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
    cache: "no-store",
    credentials: "omit",
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, body, response.headers.get("X-Request-ID"));
  }
  return body;
}

// The routes this gateway serves, from its own /openapi.json: a page reads only those, so a
// gateway without an endpoint gets no request for it (and no error in the console).
let documented = null;
export async function routes() {
  if (documented === null) {
    const response = await fetch("/openapi.json", { credentials: "omit" });
    const document = await response.json();
    documented = new Set(
      Object.entries(document.paths).flatMap(([path, ops]) =>
        Object.keys(ops).map((method) => `${method.toUpperCase()} ${path}`),
      ),
    );
  }
  return documented;
}
