// Small groups: connections in groups of GROUP_SIZE (10, as Azure measures); a REST sender
// posts to one group at a time, round-robin over all groups, and every member receives it
// (Azure's "Send to small group" scenario: ten messages out per message in).
//
// Environment (defaults in brackets suit a laptop):
//   SWITCHBOARD_ENDPOINT        http://127.0.0.1:8080; a comma-separated list spreads
//                               connections and sends over several gateways
//   SWITCHBOARD_ACCESS_KEY      the access key (or SWITCHBOARD_CONNECTION_STRING)
//   HUB                         [loadtest]
//   CONNECTIONS                 [100] receiving WebSocket connections
//   GROUP_SIZE                  [10] members per group; groups = ceil(CONNECTIONS / GROUP_SIZE)
//   JOIN                        [connection] how members join: `connection` (add connection to
//                               group) or `user` (add user to group, with a TTL)
//   CONNECTIONS_PER_VU          [10] connections held by one receiver VU
//   RATE                        [20] group sends per second, all senders together
//   DURATION                    [10] seconds of sending
//   WARMUP                      [5] seconds for the receivers to connect and join
//   DRAIN                       [5] seconds to wait for late messages after the last send
//   SENDERS                     [1] sender VUs sharing RATE
//   MESSAGE_SIZE                [2048] bytes of padding per message
//   LATENCY_P95_MS / _P99_MS    [500 / 1000] latency thresholds
//   MIN_DELIVERY_RATIO          [0.99] delivery ratio threshold (strictly above)
//
// Connection k is in group floor(k / GROUP_SIZE); message seq goes to group seq % groups.

import * as harness from './lib/harness.js';
import { groupPlan } from './lib/groups.js';
import { fromEnv } from './lib/signalr.js';

const s = harness.settings({ connections: 100, rate: 20 });
const groupSize = harness.envInt('GROUP_SIZE', 10);
const groups = Math.ceil(s.connections / groupSize);
const sb = fromEnv();

const plan = groupPlan(s, {
  groups,
  groupOf: (k) => Math.floor(k / groupSize),
  join: harness.envChoice('JOIN', 'connection', ['connection', 'user']),
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
