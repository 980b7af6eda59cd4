// Drives the serverless chat sample with the official Node client, as its end-to-end test
// (crates/switchboard/tests/e2e_sample_chat.rs) does:
//
//   SWITCHBOARD_CONNECTION_STRING=... \
//     node examples/serverless-chat/test/two-clients.mjs http://127.0.0.1:7071
//
// Two clients negotiate through the app (which redirects them to Switchboard), see each other
// join, exchange a message through the upstream and the REST API, and one leaves. Then it probes
// the app's upstream signature check directly. Prints one JSON object with everything it saw;
// exits non-zero on the first expectation not met.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import * as signalR from "@microsoft/signalr";

const app = process.argv[2];
const key = /AccessKey=([^;]+)/i.exec(process.env.SWITCHBOARD_CONNECTION_STRING ?? "")?.[1];
if (!app || !key) {
  console.error("usage: SWITCHBOARD_CONNECTION_STRING=... node two-clients.mjs <app url>");
  process.exit(64);
}
const WAIT_MS = Number(process.env.WAIT_MS || 30000);

/** A client that records what it receives and can wait for a message. */
function client(user) {
  const seen = [];
  const waiters = [];
  const record = (entry) => {
    seen.push(entry);
    for (const w of [...waiters]) w.check();
  };
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(`${app}/api?user=${encodeURIComponent(user)}`)
    .configureLogging(signalR.LogLevel.Warning)
    .build();
  connection.on("system", (text) => record({ target: "system", args: [text] }));
  connection.on("newMessage", (message) => record({ target: "newMessage", args: [message] }));
  const waitFor = (what, predicate) =>
    new Promise((resolve, reject) => {
      const waiter = {
        check() {
          if (seen.some(predicate)) {
            clearTimeout(timer);
            waiters.splice(waiters.indexOf(waiter), 1);
            resolve();
          }
        },
      };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(waiter), 1);
        reject(new Error(`${user}: no ${what} within ${WAIT_MS} ms; saw ${JSON.stringify(seen)}`));
      }, WAIT_MS);
      waiters.push(waiter);
      waiter.check();
    });
  const system = (text) =>
    waitFor(`system "${text}"`, (m) => m.target === "system" && m.args[0] === text);
  return { user, connection, seen, waitFor, system };
}

const alice = client("alice");
const zoe = client("zoë");

await alice.connection.start();
await alice.system("alice joined");
await zoe.connection.start();
await Promise.all([alice.system("zoë joined"), zoe.system("zoë joined")]);

const result = await alice.connection.invoke("broadcast", "hello from alice");
assert.deepEqual(result, { delivered: true });
const isHello = (m) =>
  m.target === "newMessage" && m.args[0].user === "alice" && m.args[0].text === "hello from alice";
await Promise.all([alice.waitFor("hello", isHello), zoe.waitFor("hello", isHello)]);

// The app answers a bad argument with an error completion, and an invocation it has no handler
// for with 404, which the service turns into an error completion.
const refused = await alice.connection.invoke("broadcast", "  ").then(
  () => assert.fail("an empty message was accepted"),
  (e) => e.message,
);
const unknown = await alice.connection.invoke("shout", "x").then(
  () => assert.fail("an unknown method was accepted"),
  (e) => e.message,
);

await zoe.connection.stop();
await alice.system("zoë left");
await alice.connection.stop();

// The upstream refuses requests not signed with the access key.
const sign = (secret, id) => "sha256=" + createHmac("sha256", secret).update(id).digest("hex");
async function upstream(signature) {
  const headers = {
    "content-type": "application/json",
    "x-asrs-connection-id": "probe-connection",
    "x-asrs-hub": "chat",
    "x-asrs-category": "messages",
    "x-asrs-event": "nosuchevent",
  };
  if (signature !== undefined) headers["x-asrs-signature"] = signature;
  const response = await fetch(`${app}/api/signalr`, { method: "POST", headers, body: "{}" });
  await response.arrayBuffer();
  return response.status;
}
const probes = {
  unsigned: await upstream(undefined),
  otherKey: await upstream(sign("not-the-access-key", "probe-connection")),
  otherConnection: await upstream(sign(key, "another-connection")),
  // One of several keys matching, in upper case, is enough (key rotation): past the check,
  // the app has no handler for this event.
  rotated: await upstream(
    `${sign("old-key", "probe-connection")}, ${sign(key, "probe-connection").toUpperCase()}`,
  ),
};

console.log(
  JSON.stringify({ alice: alice.seen, zoe: zoe.seen, result, refused, unknown, probes }),
);
