// The SignalR side of the load tests, written against k6's own APIs only (no npm bundle), so a
// script needs nothing but the k6 binary:
//
// - access tokens: HS256 JWTs signed with the access key, with the audiences the service checks
//   (client: `{endpoint}/client/?hub={hub}` carrying `asrs.s.uid`; REST: the request URL);
// - client connections: negotiate (`POST /client/negotiate?hub=H&negotiateVersion=1`), the
//   WebSocket at `/client/?hub=H&id=<connectionToken>`, the JSON hub protocol handshake, records
//   split on the 0x1E separator, a ping every 15 s, invocations handed to callbacks by target;
// - REST helpers for the sends and joins the scenarios use, non-blocking (`http.asyncRequest`) so
//   that a VU holding WebSockets keeps reading them while a request is in flight.
//
// Inputs come from the environment (see `fromEnv`): SWITCHBOARD_ENDPOINT (one URL or a comma-
// separated list of gateways, default http://127.0.0.1:8080), SWITCHBOARD_ACCESS_KEY or
// SWITCHBOARD_CONNECTION_STRING, HUB.

import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import http from 'k6/http';
import { WebSocket } from 'k6/experimental/websockets';
import { clearInterval, clearTimeout, setInterval, setTimeout } from 'k6/timers';

/** Ends every record of the JSON hub protocol. */
export const RECORD_SEPARATOR = '\x1e';

/** The JSON hub protocol's message types used here. */
export const MessageType = Object.freeze({
  INVOCATION: 1,
  STREAM_ITEM: 2,
  COMPLETION: 3,
  PING: 6,
  CLOSE: 7,
});

/** The REST api-version the helpers call (the versioned surface). */
export const API_VERSION = '2022-06-01';

/** How often a connection sends its own ping, as the official clients do. */
export const PING_INTERVAL_MS = 15000;

const WS_OPEN = 1;
const HANDSHAKE = JSON.stringify({ protocol: 'json', version: 1 }) + RECORD_SEPARATOR;
const PING = JSON.stringify({ type: MessageType.PING }) + RECORD_SEPARATOR;

// ---------------------------------------------------------------------------------------------
// Configuration

/**
 * Parses an Azure SignalR connection string (`Endpoint=...;AccessKey=...;Version=1.0;[Port=N;]`):
 * `;`-separated `key=value` pairs, keys case-insensitive, values trimmed. A `Port` replaces the
 * endpoint's port. Returns `{ endpoint, accessKey }`; throws when either is missing.
 */
export function parseConnectionString(text) {
  const values = {};
  for (const segment of String(text).split(';')) {
    if (segment.trim() === '') continue;
    const eq = segment.indexOf('=');
    if (eq < 0) throw new Error('connection string: a segment is not of the form key=value');
    values[segment.slice(0, eq).trim().toLowerCase()] = segment.slice(eq + 1).trim();
  }
  if (!values.endpoint) throw new Error('connection string: Endpoint is required');
  if (!values.accesskey) throw new Error('connection string: AccessKey is required');
  let endpoint = trimSlash(values.endpoint);
  if (values.port) {
    const m = /^(https?:\/\/)(\[[^\]]+\]|[^/:]+)(:\d+)?(.*)$/i.exec(endpoint);
    if (!m) throw new Error(`connection string: cannot apply Port to Endpoint ${endpoint}`);
    endpoint = `${m[1]}${m[2]}:${values.port}${m[4]}`;
  }
  return { endpoint, accessKey: values.accesskey };
}

/** Builds a client from SWITCHBOARD_ENDPOINT, SWITCHBOARD_ACCESS_KEY / _CONNECTION_STRING, HUB. */
export function fromEnv(defaultHub = 'loadtest') {
  let endpoints = null;
  let accessKey = __ENV.SWITCHBOARD_ACCESS_KEY || null;
  if (__ENV.SWITCHBOARD_CONNECTION_STRING) {
    const cs = parseConnectionString(__ENV.SWITCHBOARD_CONNECTION_STRING);
    endpoints = [cs.endpoint];
    accessKey = accessKey || cs.accessKey;
  }
  if (__ENV.SWITCHBOARD_ENDPOINT) {
    endpoints = __ENV.SWITCHBOARD_ENDPOINT.split(',')
      .map((e) => e.trim())
      .filter((e) => e !== '');
  }
  if (!accessKey) {
    throw new Error('set SWITCHBOARD_ACCESS_KEY or SWITCHBOARD_CONNECTION_STRING');
  }
  return new Switchboard({
    endpoints: endpoints || ['http://127.0.0.1:8080'],
    accessKey,
    hub: __ENV.HUB || defaultHub,
  });
}

function trimSlash(url) {
  return url.replace(/\/+$/, '');
}

// ---------------------------------------------------------------------------------------------
// Tokens

function base64url(text) {
  return encoding.b64encode(text, 'rawurl');
}

/** Signs `claims` as an HS256 JWT with the UTF-8 bytes of `key`. */
export function signJwt(claims, key) {
  const head = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = base64url(JSON.stringify(claims));
  const signature = crypto.hmac('sha256', key, `${head}.${body}`, 'base64rawurl');
  return `${head}.${body}.${signature}`;
}

function lifetimeClaims(lifetimeSeconds) {
  const now = Math.floor(Date.now() / 1000);
  // nbf a little in the past: a cluster's clocks may disagree by a moment.
  return { nbf: now - 60, iat: now, exp: now + lifetimeSeconds };
}

// ---------------------------------------------------------------------------------------------
// The record framing of the JSON hub protocol

/**
 * Splits `buffer + text` into complete records (without their separator) and the unfinished
 * rest, which the caller keeps for the next frame.
 */
export function splitRecords(text, buffer = '') {
  const parts = (buffer + text).split(RECORD_SEPARATOR);
  const rest = parts.pop();
  return { records: parts.filter((r) => r !== ''), rest };
}

/** The JSON record of a hub message, framed. */
export function frame(message) {
  return JSON.stringify(message) + RECORD_SEPARATOR;
}

// ---------------------------------------------------------------------------------------------
// The client

/**
 * One Switchboard deployment: its endpoints (one node, or every gateway of a cluster), the
 * access key that signs tokens and the hub under test.
 */
export class Switchboard {
  constructor({ endpoints, accessKey, hub }) {
    if (!endpoints || endpoints.length === 0) throw new Error('no endpoint');
    this.endpoints = endpoints.map(trimSlash);
    this.accessKey = accessKey;
    this.hub = hub;
  }

  /** The endpoint for the n-th connection or request: round-robin over the gateways. */
  endpoint(n = 0) {
    const i = Math.abs(Math.floor(n)) % this.endpoints.length;
    return this.endpoints[i];
  }

  /** A client access token, as an app server's negotiate would hand out. */
  clientToken(userId, endpoint = this.endpoint(), lifetimeSeconds = 3600) {
    const claims = {};
    if (userId !== undefined && userId !== null && userId !== '') claims['asrs.s.uid'] = userId;
    Object.assign(claims, lifetimeClaims(lifetimeSeconds));
    claims.aud = `${endpoint}/client/?hub=${this.hub}`;
    return signJwt(claims, this.accessKey);
  }

  /** A REST token for one request URL. */
  restToken(url, lifetimeSeconds = 3600) {
    const claims = lifetimeClaims(lifetimeSeconds);
    claims.aud = url;
    return signJwt(claims, this.accessKey);
  }

  /**
   * Negotiates a connection: resolves to `{ connectionId, connectionToken }`, rejects with an
   * Error naming the status otherwise.
   */
  async negotiate(userId, { endpoint = this.endpoint(), timeout = '10s' } = {}) {
    const url =
      `${endpoint}/client/negotiate?hub=${encodeURIComponent(this.hub)}&negotiateVersion=1`;
    const res = await http.asyncRequest('POST', url, null, {
      headers: { Authorization: `Bearer ${this.clientToken(userId, endpoint)}` },
      tags: { name: `${endpoint}/client/negotiate` },
      timeout,
    });
    if (res.status !== 200) {
      throw new Error(`negotiate: HTTP ${res.status} ${res.error || ''} ${res.body || ''}`.trim());
    }
    let body;
    try {
      body = JSON.parse(res.body);
    } catch (e) {
      throw new Error(`negotiate: response is not JSON: ${e}`);
    }
    if (!body.connectionToken || !body.connectionId) {
      throw new Error(`negotiate: no connectionToken in ${res.body}`);
    }
    return { connectionId: body.connectionId, connectionToken: body.connectionToken };
  }

  /**
   * Negotiates, opens the WebSocket and completes the handshake. Resolves to an open
   * `HubConnection`; rejects with an Error if any step fails or `timeoutMs` passes first.
   */
  async connect(userId, { endpoint = this.endpoint(), timeoutMs = 10000 } = {}) {
    const { connectionId, connectionToken } = await this.negotiate(userId, { endpoint });
    const wsUrl =
      endpoint.replace(/^http/i, 'ws') +
      `/client/?hub=${encodeURIComponent(this.hub)}&id=${encodeURIComponent(connectionToken)}`;
    const conn = new HubConnection(wsUrl, connectionId, userId, endpoint);
    await conn.opened(timeoutMs);
    return conn;
  }

  // ----- REST -----

  /** `{endpoint}/api/hubs/{hub}{path}?api-version=...`; `path` segments already encoded. */
  restUrl(path, { endpoint = this.endpoint(), query = '' } = {}) {
    const q = query ? `&${query}` : '';
    return `${endpoint}/api/hubs/${encodeURIComponent(this.hub)}${path}?api-version=${API_VERSION}${q}`;
  }

  /**
   * One REST call with a fresh token. Resolves to the k6 response (any status: callers check);
   * `name` groups the metrics of calls that differ only by ids.
   */
  rest(method, path, body, { endpoint, query, name, timeout = '10s' } = {}) {
    const url = this.restUrl(path, { endpoint, query });
    const headers = { Authorization: `Bearer ${this.restToken(url)}` };
    if (body !== null && body !== undefined) headers['Content-Type'] = 'application/json';
    return http.asyncRequest(method, url, body === null || body === undefined ? null : JSON.stringify(body), {
      headers,
      tags: { name: name || `/api/hubs/{hub}${path}` },
      timeout,
    });
  }

  /** POST `/:send` to every connection of the hub. */
  broadcast(message, opts = {}) {
    return this.rest('POST', '/:send', message, { ...opts, name: 'broadcast' });
  }

  /** POST `/users/{user}/:send`. */
  sendToUser(user, message, opts = {}) {
    return this.rest('POST', `/users/${encodeURIComponent(user)}/:send`, message, {
      ...opts,
      name: 'send to user',
    });
  }

  /** POST `/groups/{group}/:send`. */
  sendToGroup(group, message, opts = {}) {
    return this.rest('POST', `/groups/${encodeURIComponent(group)}/:send`, message, {
      ...opts,
      name: 'send to group',
    });
  }

  /** POST `/connections/{id}/:send`. */
  sendToConnection(connectionId, message, opts = {}) {
    return this.rest('POST', `/connections/${encodeURIComponent(connectionId)}/:send`, message, {
      ...opts,
      name: 'send to connection',
    });
  }

  /** PUT `/groups/{group}/connections/{id}`. */
  addConnectionToGroup(group, connectionId, opts = {}) {
    return this.rest(
      'PUT',
      `/groups/${encodeURIComponent(group)}/connections/${encodeURIComponent(connectionId)}`,
      null,
      { ...opts, name: 'add connection to group' },
    );
  }

  /** PUT `/groups/{group}/users/{user}`, with `ttl` seconds when given. */
  addUserToGroup(group, user, { ttlSeconds, ...opts } = {}) {
    return this.rest(
      'PUT',
      `/groups/${encodeURIComponent(group)}/users/${encodeURIComponent(user)}`,
      null,
      {
        ...opts,
        query: ttlSeconds === undefined ? '' : `ttl=${Math.floor(ttlSeconds)}`,
        name: 'add user to group',
      },
    );
  }
}

/** Whether a k6 response is a 2xx. */
export function isSuccess(res) {
  return res.status >= 200 && res.status < 300;
}

/**
 * A client connection speaking the JSON hub protocol over a k6 WebSocket.
 *
 * `on(target, fn)` registers a callback for invocations of `target` (matched case-insensitively,
 * as the official clients do) called with the arguments array; `onClose(fn)` is called once when
 * the connection ends, with `{ expected, error }` (`expected` is true after `close()`).
 */
export class HubConnection {
  constructor(url, connectionId, userId, endpoint) {
    this.connectionId = connectionId;
    this.userId = userId;
    this.endpoint = endpoint;
    this.handlers = {};
    this.closeHandlers = [];
    this.handshaken = false;
    this.closing = false;
    this.closed = false;
    this.closeError = null;
    this.buffer = '';
    this.pinger = null;
    this.settle = null;
    this.ws = new WebSocket(url, null, { tags: { name: `${endpoint}/client/` } });
    this.ws.onopen = () => this.sendRaw(HANDSHAKE);
    this.ws.onmessage = (event) => this.receive(event.data);
    this.ws.onerror = (event) => {
      // Once we close, how the socket ends is no failure of the connection.
      if (this.closing) return;
      this.closeError = this.closeError || String(event.error || 'websocket error');
    };
    this.ws.onclose = () => this.finish();
  }

  /** Resolves once the handshake is answered; rejects on error, close or timeout. */
  opened(timeoutMs) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.settle = null;
        this.closeError = `no handshake response within ${timeoutMs} ms`;
        this.close();
        reject(new Error(this.closeError));
      }, timeoutMs);
      this.settle = (error) => {
        clearTimeout(timer);
        this.settle = null;
        if (error) reject(new Error(error));
        else resolve(this);
      };
    });
  }

  on(target, fn) {
    this.handlers[String(target).toLowerCase()] = fn;
    return this;
  }

  onClose(fn) {
    this.closeHandlers.push(fn);
    return this;
  }

  /** Sends one hub message (an object), framed; a no-op once the connection is closing. */
  send(message) {
    this.sendRaw(frame(message));
  }

  sendRaw(text) {
    if (this.closing || this.closed || this.ws.readyState !== WS_OPEN) return;
    try {
      this.ws.send(text);
    } catch (e) {
      // The socket closed between the state check and the send; its close event follows.
    }
  }

  /** Closes the connection (a normal closure, expected by the caller). */
  close() {
    if (this.closed || this.closing) return;
    this.closing = true;
    try {
      this.ws.close();
    } catch (e) {
      this.finish();
    }
  }

  receive(data) {
    // After close() nothing more is delivered: the caller has done its counting.
    if (this.closing || this.closed) return;
    if (typeof data !== 'string') {
      this.protocolError('binary frame on a JSON protocol connection');
      return;
    }
    const { records, rest } = splitRecords(data, this.buffer);
    this.buffer = rest;
    for (const record of records) {
      if (this.closing) return;
      let message;
      try {
        message = JSON.parse(record);
      } catch (e) {
        this.protocolError(`record is not JSON: ${record.slice(0, 100)}`);
        return;
      }
      if (!this.handshaken) {
        this.handshake(message);
        continue;
      }
      this.dispatch(message);
    }
  }

  handshake(message) {
    if (message.error) {
      this.protocolError(`handshake refused: ${message.error}`);
      return;
    }
    this.handshaken = true;
    this.pinger = setInterval(() => this.sendRaw(PING), PING_INTERVAL_MS);
    if (this.settle) this.settle(null);
  }

  dispatch(message) {
    switch (message.type) {
      case MessageType.INVOCATION: {
        const fn = this.handlers[String(message.target).toLowerCase()];
        if (fn) fn(message.arguments || [], message);
        break;
      }
      case MessageType.PING:
        break; // Nothing to answer: our own pings keep the server's timeout at bay.
      case MessageType.CLOSE:
        this.closeError = `server closed the connection: ${message.error || 'no reason given'}`;
        this.close();
        break;
      default:
        break;
    }
  }

  protocolError(reason) {
    this.closeError = this.closeError || reason;
    this.close();
  }

  finish() {
    if (this.closed) return;
    this.closed = true;
    if (this.pinger !== null) clearInterval(this.pinger);
    this.pinger = null;
    const error = this.closeError || (this.closing ? null : 'connection closed by the server');
    if (this.settle) {
      this.settle(error || 'connection closed before the handshake completed');
      return;
    }
    const expected = this.closing && !this.closeError;
    for (const fn of this.closeHandlers) fn({ expected, error });
  }
}
