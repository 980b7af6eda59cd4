// Checks the pure parts of lib/ without a server: JWT signing against a vector computed
// independently (HMAC-SHA256 over the UTF-8 bytes, base64url without padding), connection-string
// parsing, 0x1E record splitting and the schedule arithmetic. smoke.sh runs it first:
//   k6 run loadtest/k6/selftest.js

import { check } from 'k6';

import { countResidue } from './lib/harness.js';
import { parseConnectionString, signJwt, splitRecords } from './lib/signalr.js';

export const options = {
  vus: 1,
  iterations: 1,
  thresholds: { checks: ['rate==1'] },
};

export default function () {
  check(signJwt({ 'asrs.s.uid': '\u00fc', aud: 'http://h/client/?hub=x', exp: 2000000000 }, 'k\u00e9y'), {
    'HS256 JWT matches the reference vector': (t) =>
      t ===
      'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9' +
        '.eyJhc3JzLnMudWlkIjoiw7wiLCJhdWQiOiJodHRwOi8vaC9jbGllbnQvP2h1Yj14IiwiZXhwIjoyMDAwMDAwMDAwfQ' +
        '.VNeyh5ZXsuYyyhPJVdWQHWduYGW0qwvC2OaiwGO2ciM',
  });

  const cs = parseConnectionString(
    ' endpoint = http://127.0.0.1:8080/ ;ACCESSKEY=a=b;Version=1.0;',
  );
  check(cs, {
    'connection string: endpoint trimmed': (c) => c.endpoint === 'http://127.0.0.1:8080',
    'connection string: key split on the first =': (c) => c.accessKey === 'a=b',
  });
  check(parseConnectionString('Endpoint=http://localhost;Port=8888;AccessKey=k;Version=1.0;'), {
    'connection string: Port replaces the port': (c) => c.endpoint === 'http://localhost:8888',
  });
  check(parseConnectionString('Endpoint=http://[::1]:1/;Port=2;AccessKey=k'), {
    'connection string: Port with an IPv6 host': (c) => c.endpoint === 'http://[::1]:2',
  });
  let threw = false;
  try {
    parseConnectionString('Endpoint=http://x;Version=1.0');
  } catch (e) {
    threw = true;
  }
  check(threw, { 'connection string: AccessKey required': (t) => t });

  const a = splitRecords('{}\x1e{"type":6}\x1e{"ty');
  const b = splitRecords('pe":1}\x1e', a.rest);
  check(null, {
    'records: complete records split on 0x1E': () =>
      a.records.length === 2 && a.records[0] === '{}' && a.records[1] === '{"type":6}',
    'records: a partial record waits for the next frame': () =>
      a.rest === '{"ty' && b.records.length === 1 && b.records[0] === '{"type":1}' && b.rest === '',
  });

  check(null, {
    'schedule: residue counts add up': () => {
      for (let n = 0; n < 30; n++) {
        for (let m = 1; m < 12; m++) {
          let total = 0;
          for (let r = 0; r < m; r++) {
            let direct = 0;
            for (let i = 0; i < n; i++) if (i % m === r) direct++;
            if (countResidue(n, m, r) !== direct) return false;
            total += direct;
          }
          if (total !== n) return false;
        }
      }
      return true;
    },
  });
}
