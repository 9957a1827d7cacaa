// Invoke a deployed thaw function over NATS, the way proto/asyncapi.json says:
// publish an Invoke (JSON codec) on thaw.invoke.<app>.<function> in the INVOKE
// stream, then read its Result on thaw.result.<call_id> (RESULTS stream).
// The Invoke carries a fresh random key; only a Result whose proof (HMAC-SHA256
// under that key, see Result.proof in proto/) verifies is taken: anything else
// on the subject is a forgery.
//
// thaw's NATS takes only credentials it issued: an invoke client's comes from
// `thaw nats-client create NAME --app hello` (a JSON file: its nkey seed, its
// inbox prefix, and the prefix its call ids carry, under which only it may
// read results).
//
//   npm install nats
//   THAW_NATS_URL=nats://127.0.0.1:24222 THAW_NATS_CREDS=NAME.nats.json \
//     node invoke_nats.mjs hello square 7
//
// Prints the function's return value as JSON; exits 1 when the call failed.
import { connect, nkeyAuthenticator } from "nats";
import { createHash, createHmac, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

const [app, fn, ...rawArgs] = process.argv.slice(2);
if (!app || !fn) {
  console.error("usage: node invoke_nats.mjs APP FUNCTION [ARG...] (each ARG is JSON)");
  process.exit(2);
}
const args = rawArgs.map((a) => JSON.parse(a));

// bytes fields travel as base64 in the JSON codec.
const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64");
const unb64 = (text) => JSON.parse(Buffer.from(text, "base64").toString());

// The bytes a Result's proof covers, as proto/schemas/result.json spells them.
const text = (s) => {
  const b = Buffer.from(s, "utf8");
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
};
const sha256 = (b64text) => createHash("sha256").update(Buffer.from(b64text, "base64")).digest();
const int64 = (n) => {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt(n));
  return b;
};
const float64 = (x) => {
  const b = Buffer.alloc(8);
  b.writeDoubleBE(x);
  return b;
};
const canonical = (r) =>
  Buffer.concat([
    Buffer.from("thaw.result.v1"),
    text(r.call_id), text(r.status), text(r.codec), sha256(r.value), sha256(r.exc),
    text(r.error), text(r.traceback), int64(r.attempts), text(r.map_id), int64(r.index),
    text(r.container_id), float64(r.started_at), float64(r.finished_at),
  ]);
const verifies = (key, callId, r) => {
  if (r.type !== "result" || r.call_id !== callId || !r.proof) return false;
  const want = createHmac("sha256", key).update(canonical(r)).digest();
  const got = Buffer.from(r.proof, "base64");
  return got.length === want.length && timingSafeEqual(got, want);
};

if (!process.env.THAW_NATS_CREDS) {
  console.error("THAW_NATS_CREDS: the credential file of `thaw nats-client create`");
  process.exit(2);
}
const creds = JSON.parse(readFileSync(process.env.THAW_NATS_CREDS, "utf8"));
const nc = await connect({
  servers: process.env.THAW_NATS_URL ?? "nats://127.0.0.1:24222",
  authenticator: nkeyAuthenticator(new TextEncoder().encode(creds.seed)),
  // Replies (here: the stream's PubAck) come to an inbox only this client may read.
  inboxPrefix: creds.inbox_prefix,
});
try {
  // Under the credential's prefix: only this client may read its results.
  const callId = `${creds.call_id_prefix}${randomUUID().replaceAll("-", "")}`;
  const resultSubject = `thaw.result.${callId}`;
  const key = randomBytes(32);
  // Subscribing before publishing means the Result cannot slip by unseen.
  const results = nc.subscribe(resultSubject, { timeout: 120_000 });

  const invoke = {
    type: "invoke",
    call_id: callId,
    app,
    function: fn,
    codec: "json",
    args: b64({ args, kwargs: {} }),
    key: key.toString("base64"),
  };
  const js = nc.jetstream();
  // The call id as the message id: a retried publish is dropped, not run twice.
  await js.publish(`thaw.invoke.${app}.${fn}`, JSON.stringify(invoke), { msgID: callId });

  let result;
  try {
    for await (const msg of results) {
      const r = msg.json();
      if (verifies(key, callId, r)) {
        result = r;
        break;
      }
      console.error(`ignored a result for ${callId} whose proof does not verify (a forgery)`);
    }
  } catch (e) {
    // An invoke client has no JetStream API (no reading RESULTS afterwards).
    throw new Error(`no result of ${callId} verified within 120 s (${e})`);
  }
  results.unsubscribe();
  if (result.status !== "success") {
    console.error(`${result.status}: ${result.error}\n${result.traceback}`);
    process.exitCode = 1;
  } else {
    console.log(JSON.stringify(unb64(result.value)));
  }
} finally {
  await nc.close();
}
