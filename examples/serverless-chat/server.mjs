// A serverless chat app for Switchboard, in the role an Azure Functions app plays for Azure
// SignalR Service: it hands out client tokens (negotiate), receives every client event as an
// upstream POST, and answers by broadcasting over the REST API. Node's standard library only.
//
//   switchboard serve --upstream http://127.0.0.1:7071/api/signalr     # terminal 1
//   npm ci --prefix examples && node examples/serverless-chat/server.mjs  # terminal 2
//   open http://127.0.0.1:7071/ in two tabs
//
// The connection string comes from SWITCHBOARD_CONNECTION_STRING, else from
// ./switchboard-data/connection-string (what `switchboard serve` writes). PORT (default 7071)
// and HOST (default 127.0.0.1) choose where it listens.
//
//   GET  /                  the chat page (index.html beside this file)
//   GET  /signalr.js        the official browser client, from examples/node_modules
//   POST /api/negotiate     {url, accessToken} for ?user=NAME: the client follows it to Switchboard
//   POST /api/signalr       the upstream: connected, disconnected and the `broadcast` invocation

import { createHmac, timingSafeEqual } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";

const HUB = "chat";
const MAX_BODY = 1 << 20;
const MAX_NAME = 64;
const MAX_TEXT = 2000;
const PAGE = fileURLToPath(new URL("index.html", import.meta.url));
const CLIENT_BUNDLE = fileURLToPath(
  new URL("../node_modules/@microsoft/signalr/dist/browser/signalr.min.js", import.meta.url),
);

// --- configuration -------------------------------------------------------------------------

function readConnectionString() {
  const fromEnv = process.env.SWITCHBOARD_CONNECTION_STRING;
  if (fromEnv && fromEnv.trim()) return fromEnv.trim();
  const file = "switchboard-data/connection-string";
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  console.error(
    "error: no connection string. Set SWITCHBOARD_CONNECTION_STRING, or start this in the " +
      `directory \`switchboard serve\` was started in (there is no ./${file} in ${process.cwd()}).`,
  );
  process.exit(1);
}

/** `Endpoint=...;AccessKey=...;Version=1.0;[Port=...;]` → `{endpoint, key}`. */
function parseConnectionString(text) {
  const fields = new Map();
  for (const part of text.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0) fields.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  const endpoint = fields.get("endpoint");
  const key = fields.get("accesskey");
  if (!endpoint || !key) {
    console.error("error: the connection string needs Endpoint=... and AccessKey=...");
    process.exit(1);
  }
  const url = new URL(endpoint);
  if (fields.has("port")) url.port = fields.get("port");
  return { endpoint: url.origin + url.pathname.replace(/\/+$/, ""), key };
}

const { endpoint, key } = parseConnectionString(readConnectionString());

// --- tokens and signatures -----------------------------------------------------------------

const base64url = (data) => Buffer.from(data).toString("base64url");

/** An HS256 JWT signed with the access key, valid for an hour. */
function jwt(claims) {
  const now = Math.floor(Date.now() / 1000);
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = base64url(JSON.stringify({ ...claims, iat: now, nbf: now, exp: now + 3600 }));
  const signature = createHmac("sha256", key).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

/**
 * Whether an upstream request comes from the service: X-ASRS-Signature lists
 * `sha256=<hex HMAC-SHA256(access key, connection id)>` for each of the service's keys, and one
 * of them must match ours (compared case-insensitively, as the Functions extension does).
 */
function signedByService(req) {
  const connectionId = req.headers["x-asrs-connection-id"];
  const header = req.headers["x-asrs-signature"];
  if (typeof connectionId !== "string" || typeof header !== "string") return false;
  const expected = Buffer.from(
    "sha256=" + createHmac("sha256", key).update(connectionId).digest("hex"),
  );
  return header.split(",").some((entry) => {
    const candidate = Buffer.from(entry.trim().toLowerCase());
    return candidate.length === expected.length && timingSafeEqual(candidate, expected);
  });
}

// --- the REST API --------------------------------------------------------------------------

/** Sends `target(...args)` to every client of the hub; returns the HTTP status. */
async function broadcast(target, ...args) {
  const path = `/api/hubs/${HUB}/:send`;
  const response = await fetch(`${endpoint}${path}?api-version=2022-06-01`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${jwt({ aud: endpoint + path })}`,
      "content-type": "application/json",
    },
    body: JSON.stringify({ target, arguments: args }),
  });
  await response.arrayBuffer();
  if (response.status !== 202) console.error(`broadcast ${target}: status ${response.status}`);
  return response.status;
}

// --- HTTP ----------------------------------------------------------------------------------

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error("body too large"), { status: 413 }));
        req.destroy();
      } else {
        chunks.push(chunk);
      }
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function send(res, status, body = "", type = "text/plain; charset=utf-8") {
  res.writeHead(status, body ? { "content-type": type } : {});
  res.end(body);
}

function sendFile(res, file, type, missing) {
  if (!existsSync(file)) return send(res, 404, missing + "\n");
  send(res, 200, readFileSync(file), type);
}

/** Node reads header values as Latin-1; the service sends user ids as UTF-8. */
function headerText(value) {
  if (typeof value !== "string") return undefined;
  const utf8 = Buffer.from(value, "latin1").toString("utf8");
  return utf8.includes("\uFFFD") ? value : utf8;
}

/** A framed JSON completion message, the answer to an invocation. */
function completion(invocationId, outcome) {
  return JSON.stringify({ type: 3, invocationId, ...outcome }) + "\x1e";
}

async function upstream(req, res) {
  if (!signedByService(req)) return send(res, 401, "invalid or missing X-ASRS-Signature\n");
  const body = await readBody(req);
  const category = String(req.headers["x-asrs-category"] ?? "").toLowerCase();
  const event = String(req.headers["x-asrs-event"] ?? "").toLowerCase();
  const user = headerText(req.headers["x-asrs-user-id"]) ?? req.headers["x-asrs-connection-id"];

  if (category === "connections" && event === "connected") {
    await broadcast("system", `${user} joined`);
    return send(res, 204);
  }
  if (category === "connections" && event === "disconnected") {
    await broadcast("system", `${user} left`);
    return send(res, 204);
  }
  if (category === "messages" && event === "broadcast") {
    if (!String(req.headers["content-type"] ?? "").startsWith("application/json")) {
      return send(res, 415, "this sample speaks the JSON hub protocol only\n");
    }
    const invocation = JSON.parse(body.toString("utf8"));
    const id = invocation.invocationId;
    const [text] = invocation.arguments ?? [];
    // A `send` (no invocation id) expects no answer; an `invoke` gets its completion.
    const answer = (outcome) =>
      id === undefined
        ? send(res, 204)
        : send(res, 200, completion(id, outcome), "application/json");
    if (typeof text !== "string" || !text.trim() || text.length > MAX_TEXT) {
      return answer({ error: `a message is 1 to ${MAX_TEXT} characters of text` });
    }
    const status = await broadcast("newMessage", { user, text });
    return answer(
      status === 202 ? { result: { delivered: true } } : { error: `not delivered (${status})` },
    );
  }
  send(res, 404, `no handler for ${category}/${event}\n`);
}

function negotiate(req, res, url) {
  const user = (url.searchParams.get("user") ?? "").trim();
  if (!user || [...user].length > MAX_NAME) {
    return send(res, 400, `?user= needs a name of 1 to ${MAX_NAME} characters\n`);
  }
  // What the Functions SignalRConnectionInfo binding returns: the client follows `url` with
  // `accessToken` as its bearer token.
  const info = {
    url: `${endpoint}/client/?hub=${HUB}`,
    accessToken: jwt({ aud: `${endpoint}/client/?hub=${HUB}`, nameid: user }),
  };
  send(res, 200, JSON.stringify(info), "application/json");
}

async function handle(req, res) {
  const url = new URL(req.url, "http://app");
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case "GET /":
    case "GET /index.html":
      return sendFile(res, PAGE, "text/html; charset=utf-8", "index.html is missing");
    case "GET /signalr.js":
      return sendFile(
        res,
        CLIENT_BUNDLE,
        "text/javascript; charset=utf-8",
        "the SignalR client is not installed: run `npm ci --prefix examples`",
      );
    case "GET /api/negotiate":
    case "POST /api/negotiate":
      return negotiate(req, res, url);
    case "POST /api/signalr":
      return upstream(req, res);
    default:
      return send(res, 404, "not found\n");
  }
}

const server = createServer((req, res) => {
  handle(req, res).catch((error) => {
    console.error(`${req.method} ${req.url}: ${error.message}`);
    if (!res.headersSent) send(res, error.status ?? 500, "error\n");
    else res.destroy();
  });
});

const host = process.env.HOST || "127.0.0.1";
const port = Number(process.env.PORT || 7071);
server.listen(port, host, () => {
  console.log(`serverless chat on http://${host}:${port}/ (Switchboard at ${endpoint})`);
});
