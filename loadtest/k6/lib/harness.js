// What every scenario shares: its knobs, its k6 options and thresholds, the metrics, and the
// receiver and sender loops. A scenario script only says who receives what (a "plan").
//
// Delivery is measured against a schedule every VU can compute on its own, because k6 VUs share
// no memory: setup() fixes the start of sending (now + WARMUP) and a run id; the senders post
// exactly MESSAGES = round(RATE * DURATION) messages, message `seq` at sendStart + seq / RATE,
// each carrying [runId, seq, sentAtMs, padding]; a plan's `expects(k, seq)` says whether
// connection k should get message seq. Receivers count each expected message once, as received
// (signalr_delivery_ratio true) or, when the run ends, missing (false); they stop early when every
// expected message is in, at the latest DRAIN seconds after the last send.
//
// A plan is an object with:
//   expectedCount(k)            how many messages connection k should receive
//   expects(k, seq)             whether connection k should receive message seq
//   userOf(k, data)             optional: the user id connection k signs in as
//   prepare(sb, conn, k, data)  optional async: after connecting (join groups); use expectOk()
//   send(sb, seq, message, data)    sender mode: the REST call for message seq (a Promise)
//   selfSend(sb, conn, seq, message) self mode (no sender VUs): each receiver VU sends to its
//                               own connections, `messages` per connection at RATE each.

import exec from 'k6/execution';
import http from 'k6/http';
import { Counter, Rate, Trend } from 'k6/metrics';
import { setTimeout, clearTimeout } from 'k6/timers';

import { isSuccess } from './signalr.js';

/** The hub method the messages invoke on the clients. */
export const TARGET = 'measure';

export const metrics = {
  latency: new Trend('signalr_delivery_latency', true),
  received: new Counter('signalr_messages_received'),
  ratio: new Rate('signalr_delivery_ratio'),
  connectErrors: new Counter('signalr_connect_errors'),
  connectDuration: new Trend('signalr_connect_duration', true),
  disconnects: new Counter('signalr_disconnects'),
  sent: new Counter('signalr_messages_sent'),
  restErrors: new Counter('signalr_rest_errors'),
  unexpected: new Counter('signalr_unexpected_messages'),
  duplicates: new Counter('signalr_duplicate_messages'),
};

function envNumber(name, fallback, { integer = false, min = 0 } = {}) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || (integer && !Number.isInteger(value))) {
    throw new Error(`${name}=${raw}: expected ${integer ? 'an integer' : 'a number'} >= ${min}`);
  }
  return value;
}

/** Reads a scenario-specific integer knob from the environment. */
export function envInt(name, fallback, min = 1) {
  return envNumber(name, fallback, { integer: true, min });
}

/** Reads a string knob from the environment, limited to `choices`. */
export function envChoice(name, fallback, choices) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  if (!choices.includes(raw)) throw new Error(`${name}=${raw}: expected one of ${choices.join(', ')}`);
  return raw;
}

/**
 * The common knobs, from the environment with the scenario's defaults:
 * CONNECTIONS, CONNECTIONS_PER_VU, RATE (messages/s, all senders together; per connection in
 * self mode), DURATION, WARMUP, DRAIN (seconds), SENDERS, MESSAGE_SIZE (bytes of padding),
 * LATENCY_P95_MS, LATENCY_P99_MS, MIN_DELIVERY_RATIO.
 */
export function settings(defaults) {
  const s = {
    connections: envInt('CONNECTIONS', defaults.connections),
    connectionsPerVu: envInt('CONNECTIONS_PER_VU', defaults.connectionsPerVu || 10),
    rate: envNumber('RATE', defaults.rate, { min: 0.001 }),
    duration: envNumber('DURATION', defaults.duration || 10, { min: 0.001 }),
    warmup: envNumber('WARMUP', defaults.warmup || 5),
    drain: envNumber('DRAIN', defaults.drain || 5),
    senders: envInt('SENDERS', defaults.senders || 1),
    messageSize: envInt('MESSAGE_SIZE', defaults.messageSize || 2048, 0),
    p95: envNumber('LATENCY_P95_MS', 500),
    p99: envNumber('LATENCY_P99_MS', 1000),
    minRatio: envNumber('MIN_DELIVERY_RATIO', 0.99),
  };
  s.messages = Math.round(s.rate * s.duration);
  s.receiverVus = Math.ceil(s.connections / s.connectionsPerVu);
  return s;
}

/** The k6 options: a receivers scenario, a sender scenario unless `selfSend`, thresholds. */
export function options(s, { selfSend = false } = {}) {
  const maxDuration = `${Math.ceil(s.warmup + s.duration + s.drain + 60)}s`;
  const scenarios = {
    receivers: {
      executor: 'per-vu-iterations',
      exec: 'receivers',
      vus: s.receiverVus,
      iterations: 1,
      maxDuration,
    },
  };
  if (!selfSend) {
    scenarios.sender = {
      executor: 'per-vu-iterations',
      exec: 'sender',
      vus: s.senders,
      iterations: 1,
      maxDuration,
    };
  }
  return {
    scenarios,
    setupTimeout: '30s',
    summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(95)', 'p(99)'],
    thresholds: {
      signalr_delivery_ratio: [`rate>${s.minRatio}`],
      signalr_delivery_latency: [`p(95)<${s.p95}`, `p(99)<${s.p99}`],
      // Guards the thresholds above, which pass vacuously on a run that measured nothing.
      signalr_messages_received: ['count>0'],
      signalr_connect_errors: ['count==0'],
      signalr_disconnects: ['count==0'],
      signalr_rest_errors: ['count==0'],
      signalr_unexpected_messages: ['count==0'],
      signalr_duplicate_messages: ['count==0'],
    },
  };
}

/**
 * Checks that every endpoint answers its health check and fixes the run's schedule, which
 * k6 hands to every VU.
 */
export function setupRun(s, sb) {
  for (const endpoint of sb.endpoints) {
    const res = http.get(`${endpoint}/api/health`, { timeout: '5s' });
    if (res.status !== 200) {
      throw new Error(`${endpoint}/api/health answered ${res.status} ${res.error || ''}`);
    }
  }
  const t0 = Date.now();
  const runId = `${t0.toString(36)}${Math.floor(Math.random() * 1e9).toString(36)}`;
  return {
    runId,
    sendStart: t0 + s.warmup * 1000,
    sendEnd: t0 + (s.warmup + s.duration) * 1000,
    deadline: t0 + (s.warmup + s.duration + s.drain) * 1000,
  };
}

/** How many of 0..n-1 are congruent to r modulo m. */
export function countResidue(n, m, r) {
  if (r < 0 || r >= m || r >= n) return 0;
  return Math.floor((n - 1 - r) / m) + 1;
}

let warnings = 0;
/** A console warning, at most 10 per VU so a broken run stays readable. */
export function warn(message) {
  warnings += 1;
  if (warnings <= 10) console.warn(message);
  if (warnings === 10) console.warn('further warnings of this VU are suppressed');
}

/** Awaits a REST call; counts and reports it as a REST error unless it answered 2xx. */
export async function expectOk(request, what) {
  let res;
  try {
    res = await request;
  } catch (e) {
    metrics.restErrors.add(1);
    warn(`${what}: ${e}`);
    return false;
  }
  if (isSuccess(res)) return true;
  metrics.restErrors.add(1);
  warn(`${what}: HTTP ${res.status} ${res.error || ''} ${String(res.body || '').slice(0, 200)}`);
  return false;
}

function sleepUntil(time) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, time - Date.now())));
}

function padding(size) {
  return 'x'.repeat(size);
}

function message(data, seq, pad) {
  return { target: TARGET, arguments: [data.runId, seq, Date.now(), pad] };
}

async function send(request, what) {
  if (await expectOk(request, what)) metrics.sent.add(1);
}

/** The receivers scenario: this VU's share of CONNECTIONS, held until the run is over. */
export async function runReceivers(s, sb, plan, data, { selfSend = false } = {}) {
  const vu = exec.scenario.iterationInTest;
  const first = vu * s.connectionsPerVu;
  const last = Math.min(first + s.connectionsPerVu, s.connections);
  const slots = [];
  let connecting = true;
  let finish;
  const finished = new Promise((resolve) => {
    finish = resolve;
  });
  const allComplete = () => !connecting && slots.every((slot) => slot.seen.size >= slot.expected);

  const onMessage = (slot, args) => {
    if (!Array.isArray(args) || args[0] !== data.runId) return; // another run on the same hub
    const [, seq, sentAt] = args;
    metrics.received.add(1);
    if (!Number.isInteger(seq) || !plan.expects(slot.k, seq)) {
      metrics.unexpected.add(1);
      warn(`connection ${slot.k} got message ${seq}, meant for others`);
      return;
    }
    if (slot.seen.has(seq)) {
      metrics.duplicates.add(1);
      warn(`connection ${slot.k} got message ${seq} twice`);
      return;
    }
    slot.seen.add(seq);
    metrics.latency.add(Date.now() - sentAt);
    metrics.ratio.add(true);
    if (slot.seen.size >= slot.expected && allComplete()) finish();
  };

  for (let k = first; k < last; k++) {
    const slot = { k, expected: plan.expectedCount(k), seen: new Set(), conn: null };
    slots.push(slot);
    const userId = plan.userOf ? plan.userOf(k, data) : `${data.runId}-user-${k}`;
    const started = Date.now();
    try {
      slot.conn = await sb.connect(userId, { endpoint: sb.endpoint(k) });
    } catch (e) {
      metrics.connectErrors.add(1);
      warn(`connection ${k}: ${e}`);
      continue;
    }
    metrics.connectDuration.add(Date.now() - started);
    slot.conn.on(TARGET, (args) => onMessage(slot, args));
    slot.conn.onClose(({ expected, error }) => {
      if (expected) return;
      metrics.disconnects.add(1);
      warn(`connection ${k} (${slot.conn.connectionId}) lost: ${error}`);
    });
    if (plan.prepare) await plan.prepare(sb, slot.conn, k, data);
  }
  connecting = false;
  if (Date.now() > data.sendStart && slots.length > 0) {
    warn(`receivers ${first}..${last - 1} were ready only after sending began: raise WARMUP`);
  }

  const deadline = setTimeout(finish, Math.max(0, data.deadline - Date.now()));
  if (allComplete()) finish();
  if (selfSend) await sendToOwnConnections(s, sb, plan, data, slots);
  await finished;
  clearTimeout(deadline);

  for (const slot of slots) {
    for (let missing = slot.expected - slot.seen.size; missing > 0; missing--) {
      metrics.ratio.add(false);
    }
    if (slot.conn) slot.conn.close();
  }
}

// Self mode: message seq to each connection at sendStart + (seq + j / n) / RATE, so the VU's n
// connections are served evenly spread over each interval.
async function sendToOwnConnections(s, sb, plan, data, slots) {
  const interval = 1000 / s.rate;
  const pad = padding(s.messageSize);
  const inFlight = [];
  for (let seq = 0; seq < s.messages; seq++) {
    for (let j = 0; j < slots.length; j++) {
      const conn = slots[j].conn;
      if (!conn || conn.closed) continue;
      await sleepUntil(data.sendStart + (seq + j / slots.length) * interval);
      inFlight.push(send(plan.selfSend(sb, conn, seq, message(data, seq, pad)), 'send'));
    }
  }
  await Promise.all(inFlight);
}

/** The sender scenario: SENDERS VUs share the schedule, each taking every SENDERS-th message. */
export async function runSender(s, sb, plan, data) {
  const me = exec.scenario.iterationInTest;
  const interval = 1000 / s.rate;
  const pad = padding(s.messageSize);
  const inFlight = [];
  for (let seq = me; seq < s.messages; seq += s.senders) {
    await sleepUntil(data.sendStart + seq * interval);
    inFlight.push(send(plan.send(sb, seq, message(data, seq, pad), data), 'send'));
  }
  await Promise.all(inFlight);
}
