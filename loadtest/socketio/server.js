// A Socket.IO 4 server for the load generator's baseline: clients connect over the WebSocket
// transport, and `POST /broadcast` with the generator's REST body {"target","arguments"} emits
// the event to every client (io.emit), as a Socket.IO app would broadcast.
//
//   node server.js [--listen 127.0.0.1:3000]
//
// Prints "listening on http://ADDR" once bound; stops on SIGINT or SIGTERM.
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');

function listenAddress() {
  const i = process.argv.indexOf('--listen');
  const value = i >= 0 ? process.argv[i + 1] : process.env.LISTEN || '127.0.0.1:3000';
  const at = value.lastIndexOf(':');
  return { host: value.slice(0, at), port: Number(value.slice(at + 1)) };
}

const MAX_BODY = 1 << 20;

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/health') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
    return;
  }
  if (req.method !== 'POST' || req.url !== '/broadcast') {
    res.writeHead(404);
    res.end();
    return;
  }
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size <= MAX_BODY) chunks.push(chunk);
  });
  req.on('end', () => {
    let message;
    try {
      if (size > MAX_BODY) throw new Error('body too large');
      message = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      if (typeof message.target !== 'string' || !Array.isArray(message.arguments)) {
        throw new Error('expected {"target": string, "arguments": array}');
      }
    } catch (e) {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: String(e.message || e) }));
      return;
    }
    io.emit(message.target, ...message.arguments);
    res.writeHead(202);
    res.end();
  });
});

const io = new Server(server, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  httpCompression: false,
});

const { host, port } = listenAddress();
server.listen({ host, port, backlog: 4096 }, () => {
  const a = server.address();
  console.log(`listening on http://${a.address}:${a.port}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    io.close();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
