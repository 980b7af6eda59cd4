// Broadcast: every connection of the hub receives every message, posted by a REST sender
// (Azure's "Broadcast" and "Serverless REST broadcast" scenarios: 2 messages/s in, fanned out to
// every connection).
//
// Environment (defaults in brackets suit a laptop):
//   SWITCHBOARD_ENDPOINT        http://127.0.0.1:8080; a comma-separated list spreads
//                               connections and sends over several gateways
//   SWITCHBOARD_ACCESS_KEY      the access key (or SWITCHBOARD_CONNECTION_STRING)
//   HUB                         [loadtest]
//   CONNECTIONS                 [100] receiving WebSocket connections
//   CONNECTIONS_PER_VU          [10] connections held by one receiver VU
//   RATE                        [2] broadcasts per second
//   DURATION                    [10] seconds of sending
//   WARMUP                      [5] seconds for the receivers to connect before sending starts
//   DRAIN                       [5] seconds to wait for late messages after the last send
//   SENDERS                     [1] sender VUs sharing RATE
//   MESSAGE_SIZE                [2048] bytes of padding per message (Azure measures 2,048)
//   LATENCY_P95_MS / _P99_MS    [500 / 1000] latency thresholds
//   MIN_DELIVERY_RATIO          [0.99] delivery ratio threshold (strictly above)
//
// Expected deliveries: CONNECTIONS * round(RATE * DURATION).

import * as harness from './lib/harness.js';
import { fromEnv } from './lib/signalr.js';

const s = harness.settings({ connections: 100, rate: 2 });
const sb = fromEnv();

const plan = {
  expectedCount: () => s.messages,
  expects: () => true,
  send: (sb, seq, message) => sb.broadcast(message, { endpoint: sb.endpoint(seq) }),
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
