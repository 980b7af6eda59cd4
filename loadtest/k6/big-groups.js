// Big groups: all connections spread over GROUPS groups (10, as Azure measures), so every group
// has CONNECTIONS / GROUPS members; a REST sender posts to one group at a time, round-robin, and
// every member receives it (Azure's "Send to big group" scenario: 20 messages/s in, each fanned
// out to a whole group).
//
// Environment (defaults in brackets suit a laptop):
//   SWITCHBOARD_ENDPOINT        http://127.0.0.1:8080; a comma-separated list spreads
//                               connections and sends over several gateways
//   SWITCHBOARD_ACCESS_KEY      the access key (or SWITCHBOARD_CONNECTION_STRING)
//   HUB                         [loadtest]
//   CONNECTIONS                 [200] receiving WebSocket connections
//   GROUPS                      [10] groups; connection k is in group k % GROUPS
//   JOIN                        [user] how members join: `user` (add user to group, with a TTL
//                               so nothing outlives the run for long) or `connection`
//   CONNECTIONS_PER_VU          [20] connections held by one receiver VU
//   RATE                        [20] group sends per second, all senders together
//   DURATION                    [10] seconds of sending
//   WARMUP                      [5] seconds for the receivers to connect and join
//   DRAIN                       [5] seconds to wait for late messages after the last send
//   SENDERS                     [1] sender VUs sharing RATE
//   MESSAGE_SIZE                [2048] bytes of padding per message
//   LATENCY_P95_MS / _P99_MS    [500 / 1000] latency thresholds
//   MIN_DELIVERY_RATIO          [0.99] delivery ratio threshold (strictly above)
//
// Message seq goes to group seq % GROUPS.

import * as harness from './lib/harness.js';
import { groupPlan } from './lib/groups.js';
import { fromEnv } from './lib/signalr.js';

const s = harness.settings({ connections: 200, connectionsPerVu: 20, rate: 20 });
const groups = harness.envInt('GROUPS', 10);
const sb = fromEnv();

const plan = groupPlan(s, {
  groups,
  groupOf: (k) => k % groups,
  join: harness.envChoice('JOIN', 'user', ['connection', 'user']),
});

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
