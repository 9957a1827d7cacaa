// Invoke a deployed thaw function over NATS, the way proto/asyncapi.json says:
// publish an Invoke (JSON codec) on thaw.invoke.<app>.<function> in the INVOKE
// stream, then read its Result on thaw.result.<call_id> (RESULTS stream).
//
//   npm install nats
//   THAW_NATS_URL=nats://127.0.0.1:4222 node invoke_nats.mjs hello square 7
//
// Prints the function's return value as JSON; exits 1 when the call failed.
import { connect } from "nats";
import { randomUUID } from "node:crypto";

const [app, fn, ...rawArgs] = process.argv.slice(2);
if (!app || !fn) {
  console.error("usage: node invoke_nats.mjs APP FUNCTION [ARG...] (each ARG is JSON)");
  process.exit(2);
}
const args = rawArgs.map((a) => JSON.parse(a));

// bytes fields travel as base64 in the JSON codec.
const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64");
const unb64 = (text) => JSON.parse(Buffer.from(text, "base64").toString());

const nc = await connect({ servers: process.env.THAW_NATS_URL ?? "nats://127.0.0.1:4222" });
try {
  const callId = `fc-${randomUUID().replaceAll("-", "")}`;
  const resultSubject = `thaw.result.${callId}`;
  // Subscribing before publishing means the Result cannot slip by unseen.
  const results = nc.subscribe(resultSubject, { max: 1, timeout: 120_000 });

  const invoke = {
    type: "invoke",
    call_id: callId,
    app,
    function: fn,
    codec: "json",
    args: b64({ args, kwargs: {} }),
  };
  const js = nc.jetstream();
  // The call id as the message id: a retried publish is dropped, not run twice.
  await js.publish(`thaw.invoke.${app}.${fn}`, JSON.stringify(invoke), { msgID: callId });

  let result;
  for await (const msg of results) {
    result = msg.json();
  }
  if (!result) {
    // The RESULTS stream keeps every Result: read the last one by subject.
    const jsm = await nc.jetstreamManager();
    result = (await jsm.streams.getMessage("RESULTS", { last_by_subj: resultSubject })).json();
  }
  if (result.status !== "success") {
    console.error(`${result.status}: ${result.error}\n${result.traceback}`);
    process.exitCode = 1;
  } else {
    console.log(JSON.stringify(unb64(result.value)));
  }
} finally {
  await nc.close();
}
