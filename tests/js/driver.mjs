// Drives official @microsoft/signalr clients on behalf of the Rust end-to-end tests.
//
// Reads one JSON command per line on stdin and writes one JSON event per line on stdout.
// Commands carry an `id`; the reply to a command is {"id", "ok": true, ...} or
// {"id", "ok": false, "error"}. Unsolicited events name the client: {"event": "message" |
// "closed" | "reconnecting" | "reconnected", "name", ...}.
//
//   {"id":1,"cmd":"connect","name":"a","url":"http://127.0.0.1:8080/client/?hub=chat",
//    "token":"<jwt>","protocol":"json"|"messagepack","targets":["hello"],"reconnect":false,
//    "transport":"websockets"|"sse"|"longpolling"|"any",   (default websockets)
//    "blockWebSockets":false,   (every WebSocket fails to open, as behind a proxy that blocks them)
//    "statefulReconnect":false}   (withStatefulReconnect())
//   {"id":2,"cmd":"invoke","name":"a","target":"echo","args":[1]}
//   {"id":3,"cmd":"send","name":"a","target":"echo","args":[1]}
//   {"id":4,"cmd":"stop","name":"a"}
//   {"id":5,"cmd":"invokeAsync","name":"a","tag":"t1","target":"slow","args":[]}
//      replies at once; later emits {"event":"result","name":"a","tag":"t1","ok":..,"result"|"error"}
//   {"id":6,"cmd":"invokeMany","name":"a","target":"echo","count":100}
//      invokes target(i) for i in 0..count at once; replies with every outcome, in call order
//   {"id":7,"cmd":"stream","name":"a","target":"ticks","args":[]}   (items and the error, if any)
//   {"id":8,"cmd":"upload","name":"a","target":"consume"}          (an invocation with a client stream)
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import readline from "node:readline";

const clients = new Map();

function emit(obj) {
  process.stdout.write(JSON.stringify(obj, (_k, v) => {
    if (v instanceof Uint8Array) return { $bytes: Buffer.from(v).toString("base64") };
    if (typeof v === "bigint") return Number(v);
    return v;
  }) + "\n");
}

function errorText(e) {
  if (e === undefined || e === null) return null;
  return e.message ?? String(e);
}

// A WebSocket that never opens: what a client sees behind a proxy that refuses upgrades.
class BlockedWebSocket {
  constructor() {
    setTimeout(() => {
      this.onerror?.({ message: "blocked" });
      this.onclose?.({ code: 1006, reason: "blocked", wasClean: false });
    }, 0);
  }
  close() {}
  send() { throw new Error("blocked"); }
}

const TRANSPORTS = {
  websockets: signalR.HttpTransportType.WebSockets,
  sse: signalR.HttpTransportType.ServerSentEvents,
  longpolling: signalR.HttpTransportType.LongPolling,
  any: signalR.HttpTransportType.WebSockets | signalR.HttpTransportType.ServerSentEvents |
    signalR.HttpTransportType.LongPolling,
};

async function connect(cmd) {
  const transport = TRANSPORTS[cmd.transport ?? "websockets"];
  if (transport === undefined) throw new Error(`unknown transport ${cmd.transport}`);
  const builder = new signalR.HubConnectionBuilder()
    .withUrl(cmd.url, {
      accessTokenFactory: () => cmd.token,
      transport,
      ...(cmd.blockWebSockets ? { WebSocket: BlockedWebSocket } : {}),
    })
    .configureLogging(signalR.LogLevel.None);
  if (cmd.protocol === "messagepack") builder.withHubProtocol(new MessagePackHubProtocol());
  if (cmd.statefulReconnect) builder.withStatefulReconnect();
  if (cmd.reconnect) builder.withAutomaticReconnect([0, 200, 500, 1000, 1000, 1000, 2000, 2000, 2000]);
  const connection = builder.build();
  if (cmd.serverTimeoutMs) connection.serverTimeoutInMilliseconds = cmd.serverTimeoutMs;
  if (cmd.keepAliveMs) connection.keepAliveIntervalInMilliseconds = cmd.keepAliveMs;
  for (const target of cmd.targets ?? []) {
    connection.on(target, (...args) => emit({ event: "message", name: cmd.name, target, args }));
  }
  connection.onclose((e) => emit({ event: "closed", name: cmd.name, error: errorText(e) }));
  connection.onreconnecting((e) => emit({ event: "reconnecting", name: cmd.name, error: errorText(e) }));
  connection.onreconnected((id) => emit({ event: "reconnected", name: cmd.name, connectionId: id }));
  clients.set(cmd.name, connection);
  await connection.start();
  return { connectionId: connection.connectionId };
}

async function handle(cmd) {
  const client = clients.get(cmd.name);
  switch (cmd.cmd) {
    case "connect":
      return connect(cmd);
    case "invoke":
      return { result: await client.invoke(cmd.target, ...(cmd.args ?? [])) };
    case "send":
      await client.send(cmd.target, ...(cmd.args ?? []));
      return {};
    case "invokeAsync":
      client.invoke(cmd.target, ...(cmd.args ?? [])).then(
        (result) => emit({ event: "result", name: cmd.name, tag: cmd.tag, ok: true, result }),
        (e) => emit({ event: "result", name: cmd.name, tag: cmd.tag, ok: false, error: errorText(e) }),
      );
      return {};
    case "invokeMany": {
      const calls = [];
      for (let i = 0; i < cmd.count; i++) calls.push(client.invoke(cmd.target, i));
      const settled = await Promise.allSettled(calls);
      return {
        outcomes: settled.map((s) =>
          s.status === "fulfilled" ? { ok: true, result: s.value } : { ok: false, error: errorText(s.reason) }),
      };
    }
    case "stream":
      return await new Promise((resolve) => {
        const items = [];
        client.stream(cmd.target, ...(cmd.args ?? [])).subscribe({
          next: (item) => items.push(item),
          complete: () => resolve({ items, error: null }),
          error: (e) => resolve({ items, error: errorText(e) }),
        });
      });
    case "upload": {
      const subject = new signalR.Subject();
      const call = client.invoke(cmd.target, subject);
      subject.next(1);
      subject.complete();
      try {
        return { result: await call, error: null };
      } catch (e) {
        return { result: null, error: errorText(e) };
      }
    }
    case "stop":
      await client.stop();
      return {};
    case "state":
      // The transport in use, by its class name (WebSocketTransport, ServerSentEventsTransport,
      // LongPollingTransport): the client does not expose it otherwise.
      return {
        state: client.state,
        connectionId: client.connectionId,
        transport: client.connection?.transport?.constructor?.name ?? null,
      };
    default:
      throw new Error(`unknown command ${cmd.cmd}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    emit({ ok: false, error: `bad command: ${e.message}` });
    return;
  }
  handle(cmd).then(
    (reply) => emit({ id: cmd.id, ok: true, ...reply }),
    (e) => emit({ id: cmd.id, ok: false, error: errorText(e) }),
  );
});
rl.on("close", async () => {
  await Promise.allSettled([...clients.values()].map((c) => c.stop()));
  process.exit(0);
});
