// The console's shell: sign-in, the page for the hash, a refresh every 2 s without reloading.
import { ApiError, call, session } from "./api.js";
import { showKeys } from "./keys.js";
import { showOverview } from "./overview.js";
import { showUsage } from "./usage.js";

const REFRESH_MS = 2000;
const PAGES = {
  overview: { role: "admin", show: showOverview },
  keys: { role: "admin", show: showKeys },
  usage: { role: "client", show: showUsage },
};
const HOME = { admin: "overview", client: "usage" };
const byId = (id) => document.getElementById(id);
let timer = null;
let running = false;

function say(text) {
  byId("status").textContent = text;
}

function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut("The key was refused: sign in again.");
    return;
  }
  const id = error.requestId ? ` (request ${error.requestId})` : "";
  say(`Could not refresh: ${error.message}${id}`);
}

function current() {
  const role = session.role();
  const name = location.hash.slice(1);
  const page = PAGES[name];
  return page && page.role === role ? name : HOME[role];
}

async function refresh() {
  if (running || !session.key()) return;
  running = true;
  const name = current();
  try {
    await PAGES[name].show(refresh, failed);
    say(`Updated ${new Date().toLocaleTimeString([], { hour12: false })}`);
  } catch (error) {
    failed(error);
  } finally {
    running = false;
  }
}

function show() {
  const role = session.role();
  const signedIn = Boolean(session.key());
  byId("signin").hidden = signedIn;
  byId("nav").hidden = !signedIn;
  clearInterval(timer);
  timer = null;
  for (const section of document.querySelectorAll(".page")) section.hidden = true;
  if (!signedIn) {
    byId("signin-key").focus();
    return;
  }
  const name = current();
  byId(`page-${name}`).hidden = false;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("current", link.dataset.page === name);
    link.classList.toggle("unavailable", link.dataset.role !== role);
  }
  byId("who").textContent = role === "admin" ? "signed in as admin" : "signed in with a client key";
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

function signOut(message = "") {
  session.clear();
  byId("signin-error").textContent = message;
  say("");
  show();
}

async function signIn(event) {
  event.preventDefault();
  const key = byId("signin-key").value.trim();
  const role = new FormData(event.target).get("role");
  byId("signin-error").textContent = "";
  try {
    // A key is kept only once the gateway has taken it for that role.
    await call("GET", role === "admin" ? "/admin/overview" : "/v1/models", key);
  } catch (error) {
    const refused = error instanceof ApiError && (error.status === 401 || error.status === 404);
    byId("signin-error").textContent = refused
      ? `This key does not open the ${role} pages.`
      : `Sign-in failed: ${error.message}`;
    return;
  }
  byId("signin-key").value = "";
  session.save(key, role);
  location.hash = HOME[role];
  show();
}

byId("signin-form").addEventListener("submit", signIn);
byId("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", show);
show();
