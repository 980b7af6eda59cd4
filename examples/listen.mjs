// Connects the official SignalR JavaScript client to Switchboard and prints what arrives.
//
//   node examples/listen.mjs <client url> <access token> [method ...]
//
// The URL and token come from `switchboard token`. Methods default to "message".
import * as signalR from "@microsoft/signalr";

const [url, token, ...methods] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: node examples/listen.mjs <client url> <access token> [method ...]");
  process.exit(64);
}
const connection = new signalR.HubConnectionBuilder()
  .withUrl(url, { accessTokenFactory: () => token })
  .withAutomaticReconnect()
  .configureLogging(signalR.LogLevel.Warning)
  .build();
for (const method of methods.length ? methods : ["message"]) {
  connection.on(method, (...args) => console.log(`${method}:`, ...args.map((a) => JSON.stringify(a))));
}
connection.onclose((e) => console.log("closed", e ? e.message : ""));
await connection.start();
console.log(`connected as ${connection.connectionId}; waiting for messages (Ctrl-C to quit)`);
