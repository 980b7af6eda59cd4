// Send to connection: every connection receives RATE messages per second addressed to its
// connection id over REST (Azure's "Send to connection" scenario, 1 message/s per connection,
// in equal to out). Connection ids are only known where the connection was opened, so each
// receiver VU posts the sends for its own connections; there is no sender VU.
//
// Environment (defaults in brackets suit a laptop):
//   SWITCHBOARD_ENDPOINT        http://127.0.0.1:8080; a comma-separated list spreads
//                               connections and sends over several gateways (a send goes
//                               through a different gateway than the one holding the
//                               connection whenever there are several)
//   SWITCHBOARD_ACCESS_KEY      the access key (or SWITCHBOARD_CONNECTION_STRING)
//   HUB                         [loadtest]
//   CONNECTIONS                 [100] receiving WebSocket connections
//   CONNECTIONS_PER_VU          [10] connections held (and sent to) by one VU
//   RATE                        [1] messages per second to each connection
//   DURATION                    [10] seconds of sending
//   WARMUP                      [5] seconds for the receivers to connect before sending starts
//   DRAIN                       [5] seconds to wait for late messages after the last send
//   MESSAGE_SIZE                [2048] bytes of padding per message
//   LATENCY_P95_MS / _P99_MS    [500 / 1000] latency thresholds
//   MIN_DELIVERY_RATIO          [0.99] delivery ratio threshold (strictly above)
//
// Expected deliveries: CONNECTIONS * round(RATE * DURATION); total rate CONNECTIONS * RATE.

import * as harness from './lib/harness.js';
import { fromEnv } from './lib/signalr.js';

const s = harness.settings({ connections: 100, rate: 1 });
const sb = fromEnv();

const plan = {
  expectedCount: () => s.messages,
  expects: (k, seq) => seq < s.messages,
  selfSend: (sb, conn, seq, message) =>
    sb.sendToConnection(conn.connectionId, message, { endpoint: otherEndpoint(conn, seq) }),
};

// With several gateways, send through one that does not hold the connection (round-robin over
// the others), so every message crosses between gateways.
function otherEndpoint(conn, seq) {
  const n = sb.endpoints.length;
  if (n < 2) return sb.endpoint(0);
  return sb.endpoint(sb.endpoints.indexOf(conn.endpoint) + 1 + (seq % (n - 1)));
}

export const options = harness.options(s, { selfSend: true });

export function setup() {
  return harness.setupRun(s, sb);
}

export function receivers(data) {
  return harness.runReceivers(s, sb, plan, data, { selfSend: true });
}
