// Send to user: a REST sender posts to one user at a time, round-robin over all users; every
// connection of that user receives the message (Azure's "Serverless REST send-to-user"
// scenario, where messages in equal messages out).
//
// Environment (defaults in brackets suit a laptop):
//   SWITCHBOARD_ENDPOINT        http://127.0.0.1:8080; a comma-separated list spreads
//                               connections and sends over several gateways
//   SWITCHBOARD_ACCESS_KEY      the access key (or SWITCHBOARD_CONNECTION_STRING)
//   HUB                         [loadtest]
//   CONNECTIONS                 [100] receiving WebSocket connections
//   CONNECTIONS_PER_USER        [1] connections signed in as the same user
//   CONNECTIONS_PER_VU          [10] connections held by one receiver VU
//   RATE                        [50] sends per second, all senders together
//   DURATION                    [10] seconds of sending
//   WARMUP                      [5] seconds for the receivers to connect before sending starts
//   DRAIN                       [5] seconds to wait for late messages after the last send
//   SENDERS                     [1] sender VUs sharing RATE
//   MESSAGE_SIZE                [2048] bytes of padding per message
//   LATENCY_P95_MS / _P99_MS    [500 / 1000] latency thresholds
//   MIN_DELIVERY_RATIO          [0.99] delivery ratio threshold (strictly above)
//
// Message seq goes to user seq % USERS, USERS = ceil(CONNECTIONS / CONNECTIONS_PER_USER).

import * as harness from './lib/harness.js';
import { fromEnv } from './lib/signalr.js';

const s = harness.settings({ connections: 100, rate: 50 });
const perUser = harness.envInt('CONNECTIONS_PER_USER', 1);
const users = Math.ceil(s.connections / perUser);
const sb = fromEnv();

const userIndex = (k) => Math.floor(k / perUser);
const userName = (data, u) => `${data.runId}-user-${u}`;

const plan = {
  userOf: (k, data) => userName(data, userIndex(k)),
  expectedCount: (k) => harness.countResidue(s.messages, users, userIndex(k)),
  expects: (k, seq) => seq % users === userIndex(k),
  send: (sb, seq, message, data) =>
    sb.sendToUser(userName(data, seq % users), message, { endpoint: sb.endpoint(seq) }),
};

export const options = harness.options(s);

export function setup() {
  return harness.setupRun(s, sb);
}

export function receivers(data) {
  return harness.runReceivers(s, sb, plan, data);
}

export function sender(data) {
  return harness.runSender(s, sb, plan, data);
}
