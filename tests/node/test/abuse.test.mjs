// Abuse of a public gateway: refused CONNECTs piling up on one transport, guessed tokens and API
// keys per client IP (through a trusted proxy's X-Forwarded-For), and what client input and
// secrets may reach the logs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';

import { BIN, SECRET, openRawWebSocket, request, startServer, withTimeout } from './helpers.mjs';

const KEY = 'abuse-api-key-0123456789';

/** The value of a sample `name{labels}` (labels written as in the exposition), or undefined. */
function sample(text, series) {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Connection options for a client behind the trusted proxy, as `ip`. */
function from(ip) {
  return { extraHeaders: { 'x-forwarded-for': ip } };
}

test('more than 3 refused CONNECTs on one transport close it; 3 do not', async () => {
  // A long connect timeout, so only the refusal count can close the transport.
  const server = await startServer({ CONNECT_TIMEOUT_SECS: '60' });
  try {
    const connect = (raw, token) => raw.ws.send(`40/ws,${JSON.stringify({ token })}`);
    const refusal = async (raw) => JSON.parse((await raw.next((m) => m.startsWith('44/ws,'))).slice(6));

    // Three refusals, then a good token on the same transport is still served.
    const patient = await openRawWebSocket(server.url);
    for (let i = 0; i < 3; i++) {
      connect(patient, 'not-a-token');
      assert.deepEqual(await refusal(patient), { message: 'Invalid token' });
    }
    connect(patient, server.token());
    const ok = JSON.parse((await patient.next((m) => m.startsWith('40/ws,'))).slice(6));
    assert.equal(typeof ok.sid, 'string');
    patient.ws.close();

    // The fourth refusal closes the transport.
    const prober = await openRawWebSocket(server.url);
    for (let i = 0; i < 3; i++) {
      connect(prober, 'not-a-token');
      await refusal(prober);
    }
    connect(prober, 'not-a-token');
    await withTimeout(prober.closed, 5000, 'the transport to be closed after the 4th refusal');
  } finally {
    await server.stop();
  }
});

test('failed token verifications are limited per client IP, named by a trusted proxy', async () => {
  const server = await startServer({ AUTH_FAILURES_PER_IP_PER_MINUTE: '3', TRUSTED_PROXIES: '127.0.0.1' });
  try {
    for (let i = 0; i < 3; i++) {
      const err = await server.refused('not-a-token', from('203.0.113.7'));
      assert.equal(err.message, 'Invalid token');
    }
    // Over the limit, even a valid token is refused unverified, with its own message.
    const err = await server.refused(server.token(), from('203.0.113.7'));
    assert.equal(err.message, 'Too many failed attempts');
    // Through a second trusted hop the client is still 203.0.113.7.
    const relayed = await server.refused(server.token(), from('203.0.113.7, 127.0.0.1'));
    assert.equal(relayed.message, 'Too many failed attempts');
    // Another client is not affected, and neither is one that forged the left of the header:
    // the rightmost untrusted hop is the client.
    (await server.connect(server.token(), from('203.0.113.8'))).close();
    (await server.connect(server.token(), from('203.0.113.7, 198.51.100.1'))).close();

    const m = (await request(`${server.url}/metrics`)).body;
    assert.equal(sample(m, 'aegisx_auth_throttled_total{surface="socket"}'), 2);
    assert.equal(sample(m, 'websocket_connect_refused_total{reason="Too many failed attempts"}'), 2);
  } finally {
    await server.stop();
  }
});

test('loopback is not exempt, and an untrusted peer cannot name another IP', async () => {
  const server = await startServer({ AUTH_FAILURES_PER_IP_PER_MINUTE: '2' });
  try {
    // No trusted proxy: these headers are ignored and both failures count against 127.0.0.1.
    await server.refused('not-a-token', from('203.0.113.1'));
    await server.refused('not-a-token', from('203.0.113.2'));
    const err = await server.refused(server.token(), from('203.0.113.3'));
    assert.equal(err.message, 'Too many failed attempts');
  } finally {
    await server.stop();
  }
});

test('wrong API keys are limited per client IP: 429 with Retry-After, before the key is checked', async () => {
  const server = await startServer({
    API_KEYS: KEY,
    API_KEY_FAILURES_PER_IP_PER_MINUTE: '3',
    TRUSTED_PROXIES: '127.0.0.1',
  });
  try {
    const stats = (ip, key) =>
      request(`${server.url}/api/v1/stats`, {
        headers: { 'x-forwarded-for': ip, ...(key ? { authorization: `Bearer ${key}` } : {}) },
      });
    assert.equal((await stats('198.51.100.20')).status, 401);
    assert.equal((await stats('198.51.100.20', 'wrong-key-1')).status, 401);
    assert.equal((await stats('198.51.100.20', 'wrong-key-2')).status, 401);
    const limited = await stats('198.51.100.20', KEY);
    assert.equal(limited.status, 429);
    assert.deepEqual(limited.json.error, { code: 'RATE_LIMITED', message: 'Too many failed attempts' });
    const retry = Number(limited.headers['retry-after']);
    assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 60, `Retry-After ${limited.headers['retry-after']}`);
    assert.equal((await stats('198.51.100.21', KEY)).status, 200);

    const m = (await request(`${server.url}/metrics`)).body;
    assert.equal(sample(m, 'aegisx_auth_throttled_total{surface="api"}'), 1);
  } finally {
    await server.stop();
  }
});

test('an unknown message type is truncated and escaped in the log', async () => {
  const server = await startServer({ LOG_LEVEL: 'warn' });
  try {
    const socket = await server.connect(server.token());
    const type = `${'x'.repeat(10_000)}\n2026-01-01T00:00:00Z ERROR forged-line`;
    const res = await socket.timeout(5000).emitWithAck('message', { type, data: {} });
    assert.equal(res.error.code, 'UNKNOWN_EVENT');
    let line;
    for (let i = 0; i < 100 && line === undefined; i++) {
      line = server.stderr().split('\n').find((l) => l.includes('unknown message type dropped'));
      if (line === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(line !== undefined, 'the unknown type is logged');
    assert.ok(line.length < 1000, `log line of ${line.length} characters`);
    assert.ok(!server.stderr().split('\n').some((l) => l.startsWith('2026-01-01T00:00:00Z')), 'no forged log line');
  } finally {
    await server.stop();
  }
});

/** Runs the binary to completion; resolves with { code, stdout, stderr }. */
function run(args, env) {
  return withTimeout(
    new Promise((resolve) => {
      execFile(BIN, args, { env: { PATH: process.env.PATH, ...env } }, (err, stdout, stderr) =>
        resolve({ code: err ? err.code : 0, stdout, stderr }),
      );
    }),
    20_000,
    `aegisx-realtime ${args.join(' ')}`,
  );
}

test('a database password in the URL query never reaches the output', async () => {
  const env = {
    JWT_SECRET: SECRET,
    HOST: '127.0.0.1',
    PORT: '0',
    DATABASE_URL: 'postgres://127.0.0.1:1/db?user=u&password=hunter2-secret&sslmode=disable',
  };
  const checked = await run(['check-config'], env);
  assert.match(checked.stdout, /password=\*\*\*/);
  // An unsupported scheme: `serve` fails at once, naming the URL it could not open.
  const served = await run(['serve'], { ...env, DATABASE_URL: 'mysql://127.0.0.1/db?password=hunter2-secret' });
  assert.notEqual(served.code, 0);
  assert.match(served.stderr, /cannot open DATABASE_URL=.*password=\*\*\*/);
  for (const out of [checked.stdout, checked.stderr, served.stdout, served.stderr]) {
    assert.ok(!out.includes('hunter2'), out);
  }
});
