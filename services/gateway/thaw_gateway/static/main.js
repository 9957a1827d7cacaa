// Sign-in, navigation and the refresh of the view on screen.

import { ApiError, api, token } from "./api.js";
import { appView, appsView } from "./apps.js";
import { containersView, nodesView, snapshotsView } from "./cluster.js";
import { callsSection } from "./calls.js";
import { fill, h, section } from "./dom.js";
import { secretsView, volumeView, volumesView } from "./store.js";

const REFRESH_MS = 2000;
const main = document.getElementById("main");
const banner = document.getElementById("banner");
const signin = document.getElementById("signin");
const shell = document.getElementById("shell");
let current = null; // the view on screen: its timers and open streams

const ROUTES = [
  [/^#\/apps\/([^/]+)$/, (ctx, m) => appView(ctx, decodeURIComponent(m[1]))],
  [/^#\/calls$/, (ctx) => section("Calls", callsSection(ctx))],
  [/^#\/containers$/, containersView],
  [/^#\/nodes$/, nodesView],
  [/^#\/snapshots$/, snapshotsView],
  [/^#\/secrets$/, secretsView],
  [/^#\/volumes\/([^/]+)\/?(.*)$/, (ctx, m) => volumeView(ctx, decodeURIComponent(m[1]), m[2])],
  [/^#\/volumes$/, volumesView],
  [/^/, appsView],
];

function context() {
  const abort = new AbortController();
  const timers = [];
  const ctx = {
    signal: abort.signal,
    // Run `load` now and every REFRESH_MS while this view is on screen.
    every(load) {
      const run = () => load().then(() => { if (ctx === current) banner.hidden = true; }, ctx.fail);
      run();
      timers.push(setInterval(run, REFRESH_MS));
    },
    fail(e) {
      if (abort.signal.aborted || ctx !== current) return;
      if (e instanceof ApiError && e.status === 401) return signOut(`Token refused: ${e.message}`);
      banner.hidden = false;
      banner.textContent = e.message;
    },
    close() {
      abort.abort();
      timers.forEach(clearInterval);
    },
  };
  return ctx;
}

function show() {
  if (current) current.close();
  current = null;
  if (!token.get()) {
    shell.hidden = true;
    signin.hidden = false;
    return;
  }
  signin.hidden = true;
  shell.hidden = false;
  const hash = location.hash || "#/apps";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", hash.startsWith(a.getAttribute("href")));
  }
  current = context();
  const [pattern, view] = ROUTES.find(([p]) => p.test(hash));
  fill(main, view(current, hash.match(pattern)));
}

function signOut(message = "") {
  token.clear();
  document.getElementById("signin-error").textContent = message;
  show();
}

signin.addEventListener("submit", async (event) => {
  event.preventDefault();
  const typed = document.getElementById("token").value.trim();
  const error = document.getElementById("signin-error");
  error.textContent = "";
  try {
    await api("/v1/apps", { bearer: typed });
  } catch (e) {
    error.textContent = e instanceof ApiError && e.status === 401
      ? `Token refused: ${e.message}` : `Could not reach the gateway: ${e.message}`;
    return;
  }
  token.set(typed);
  document.getElementById("token").value = "";
  show();
});
document.getElementById("signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", show);
show();
