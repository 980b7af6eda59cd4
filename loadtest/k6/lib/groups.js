// The plan shared by the small- and big-group scenarios: each connection belongs to one group,
// joins it after connecting (as a connection, or through its user with a TTL), and message seq
// goes to group seq % groups. Group and user names carry the run id, so runs never see each
// other's members.

import { countResidue, expectOk } from './harness.js';

/** `groupOf(k)` in 0..groups-1; `join` is `connection` or `user`. */
export function groupPlan(s, { groups, groupOf, join }) {
  const groupName = (data, g) => `${data.runId}-group-${g}`;
  // A user's group membership is stored; let it expire soon after the run.
  const ttlSeconds = Math.ceil(s.warmup + s.duration + s.drain + 300);
  return {
    expectedCount: (k) => countResidue(s.messages, groups, groupOf(k)),
    expects: (k, seq) => seq % groups === groupOf(k),
    prepare: (sb, conn, k, data) => {
      const group = groupName(data, groupOf(k));
      const opts = { endpoint: sb.endpoint(k) };
      const request =
        join === 'user'
          ? sb.addUserToGroup(group, conn.userId, { ...opts, ttlSeconds })
          : sb.addConnectionToGroup(group, conn.connectionId, opts);
      return expectOk(request, `join ${group}`);
    },
    send: (sb, seq, message, data) =>
      sb.sendToGroup(groupName(data, seq % groups), message, { endpoint: sb.endpoint(seq) }),
  };
}
