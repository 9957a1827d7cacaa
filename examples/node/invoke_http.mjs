// Invoke a deployed thaw function over the gateway's HTTP API with fetch
// (Node.js 18+; no packages needed).
//
//   THAW_GATEWAY_URL=http://127.0.0.1:8000 THAW_TOKEN=... node invoke_http.mjs hello square 7
//
// Prints the function's return value as JSON; exits 1 when the call failed.
const [app, fn, ...rawArgs] = process.argv.slice(2);
if (!app || !fn) {
  console.error("usage: node invoke_http.mjs APP FUNCTION [ARG...] (each ARG is JSON)");
  process.exit(2);
}
const base = process.env.THAW_GATEWAY_URL ?? "http://127.0.0.1:8000";
const headers = {
  Authorization: `Bearer ${process.env.THAW_TOKEN}`,
  "Content-Type": "application/json",
};

async function api(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) {
    throw new Error(`${method} ${path}: ${response.status} ${answer.error?.message}`);
  }
  return { status: response.status, answer };
}

const args = rawArgs.map((a) => JSON.parse(a));
// wait=S answers the result (200) when the call finishes within S seconds,
// else 202 with the call id, whose result GET /v1/calls/{id}?wait=S follows.
let { status, answer } = await api("POST", `/v1/functions/${app}/${fn}/calls?wait=60`, {
  args,
  kwargs: {},
});
while (status === 202) {
  ({ status, answer } = await api("GET", `/v1/calls/${answer.call_id}?wait=60`));
}
if (answer.status !== "success") {
  console.error(`${answer.status}: ${answer.error}\n${answer.traceback}`);
  process.exitCode = 1;
} else {
  console.log(JSON.stringify(answer.value));
}
