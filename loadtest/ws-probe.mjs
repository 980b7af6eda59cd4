// An independent measure of WebSocket idle memory, with no Rust on the client side: raw `ws`
// clients (the package the official Node client uses) open N connections to a running
// Switchboard, each with its own negotiate and the JSON hub protocol handshake, and the
// server's RSS is read from /proc before the first and 2 s after the last handshake.
//
//   node loadtest/ws-probe.mjs --url http://127.0.0.1:18490 --token JWT --pid PID [--connections 10000] [--hold SECONDS]
//
// JWT is a client access token for the hub `probe` (`switchboard token --hub probe --only
// token`); loadtest/ws-probe.sh starts a server and runs this. Prints one JSON line:
// {"connections":N,"rss_before_kib":..,"rss_after_kib":..,"kib_per_connection":..}.
// The clients send no pings: the run must end within the server's client timeout (30 s).

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "..", "tests", "js", "package.json"));
const WebSocket = require("ws");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (fallback === undefined) {
    console.error(`missing --${name}`);
    process.exit(64);
  }
  return fallback;
}

const base = arg("url").replace(/\/$/, "");
const token = arg("token");
const pid = Number(arg("pid"));
const total = Number(arg("connections", "10000"));
const parallel = Number(arg("parallel", "100"));
// Seconds to keep the connections open after the measure (to profile the server meanwhile).
const hold = Number(arg("hold", "0"));
const hub = "probe";

function rssKib() {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

async function open() {
  const negotiated = await fetch(`${base}/client/negotiate?hub=${hub}&negotiateVersion=1`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
  });
  if (negotiated.status !== 200) throw new Error(`negotiate: ${negotiated.status}`);
  const { connectionToken } = await negotiated.json();
  const url =
    `${base.replace(/^http/, "ws")}/client/?hub=${hub}` +
    `&id=${encodeURIComponent(connectionToken)}&access_token=${encodeURIComponent(token)}`;
  const socket = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.once("open", () => socket.send('{"protocol":"json","version":1}\u001e'));
    socket.once("message", (data) => {
      if (String(data).startsWith("{}")) resolve();
      else reject(new Error(`handshake: ${data}`));
    });
  });
  return socket;
}

const before = rssKib();
const sockets = [];
let next = 0;
async function worker() {
  while (next < total) {
    next += 1;
    sockets.push(await open());
  }
}
await Promise.all(Array.from({ length: parallel }, worker));
await new Promise((resolve) => setTimeout(resolve, 2000));
const after = rssKib();
console.log(
  JSON.stringify({
    connections: sockets.length,
    rss_before_kib: before,
    rss_after_kib: after,
    kib_per_connection: Number(((after - before) / sockets.length).toFixed(3)),
  }),
);
if (hold > 0) await new Promise((resolve) => setTimeout(resolve, hold * 1000));
for (const socket of sockets) socket.terminate();
process.exit(0);
