// The gateway on PostgreSQL (TEST_POSTGRES_URL, default the local server; required under
// CI=true, skipped loudly elsewhere when it does not answer), through a TCP proxy the test can
// freeze: a database that stops answering without closing the connection gives UNAVAILABLE
// within STORE_TIMEOUT_MS, never a frozen writer; and what PostgreSQL cannot hold (NUL) is
// refused at validation, not by a failing batch.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';

import { chat, expectFailure, joinRoom, request, sendMessage, startServer, uid } from './helpers.mjs';

const PG_URL = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const API_KEY = 'pg-api-key-0123456789';
const schema = `node_${Math.floor(Date.now() / 1000)}_${process.pid}`;

function psql(sql) {
  execFileSync('psql', [PG_URL, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10000 });
}

let available = true;
try {
  psql(`CREATE SCHEMA ${schema}`);
} catch (e) {
  if (process.env.CI === 'true') throw new Error(`PostgreSQL is required under CI=true but ${PG_URL} does not answer: ${e.message}`);
  console.error(`\n*** SKIPPED: postgres.test.mjs (${PG_URL} does not answer: ${String(e.stderr ?? e.message).trim()}) ***\n`);
  available = false;
}

/** A TCP proxy to PostgreSQL that can stop forwarding (both ways) without closing anything. */
function freezableProxy(upstream) {
  const pairs = new Set();
  let frozen = false;
  const server = net.createServer((client) => {
    const up = net.connect(upstream.port, upstream.hostname);
    const pair = { client, up };
    pairs.add(pair);
    client.pipe(up);
    up.pipe(client);
    if (frozen) {
      client.pause();
      up.pause();
    }
    const close = () => {
      pairs.delete(pair);
      client.destroy();
      up.destroy();
    };
    client.on('error', close).on('close', close);
    up.on('error', close).on('close', close);
  });
  return {
    listen: () => new Promise((r) => server.listen(0, '127.0.0.1', () => r(server.address().port))),
    freeze(on) {
      frozen = on;
      for (const { client, up } of pairs) {
        if (on) {
          client.pause();
          up.pause();
        } else {
          client.resume();
          up.resume();
        }
      }
    },
    close: () => {
      for (const { client, up } of pairs) {
        client.destroy();
        up.destroy();
      }
      server.close();
    },
  };
}

let server;
let proxy;
before(async () => {
  if (!available) return;
  const upstream = new URL(PG_URL);
  proxy = freezableProxy({ hostname: upstream.hostname, port: Number(upstream.port || 5432) });
  const port = await proxy.listen();
  const url = new URL(PG_URL);
  url.host = `127.0.0.1:${port}`;
  url.searchParams.set('options', `-c search_path=${schema}`);
  server = await startServer({ DATABASE_URL: url.toString(), API_KEYS: API_KEY, STORE_TIMEOUT_MS: 1000 });
});
afterEach(() => server?.closeClients());
after(async () => {
  if (!available) return;
  proxy.freeze(false);
  await server.stop();
  proxy.close();
  try {
    psql(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } catch {
    // a later run drops nothing of ours; the schema name carries its time
  }
});

describe('PostgreSQL', { skip: !available && 'PostgreSQL not available' }, () => {
  test('a NUL in one message is refused with INVALID_PAYLOAD and messages sent with it are stored', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const [a, b] = await Promise.all([0, 1].map(() => server.connect(server.token({ tenantId }))));
    await joinRoom(a, roomId);
    await joinRoom(b, roomId);
    // Act: sent together, so they would share a batch
    const [good1, bad, good2] = await Promise.all([
      sendMessage(a, 'send_message', { roomId, message: 'fine' }),
      sendMessage(b, 'send_message', { roomId, message: 'bad\u0000' }),
      sendMessage(a, 'send_message', { roomId, message: 'fine too' }),
    ]);
    // Assert
    assert.equal(good1.ok, true, JSON.stringify(good1));
    assert.equal(good2.ok, true, JSON.stringify(good2));
    assert.equal(bad.ok, false);
    assert.equal(bad.error.code, 'INVALID_PAYLOAD');
  });

  test('POST /notifications with a NUL is 400, not 503', async () => {
    // Act
    const res = await request(`${server.url}/api/v1/notifications`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${API_KEY}` },
      body: { userId: uid('u'), title: 'T', message: 'a\u0000b', type: 'info' },
    });
    // Assert
    assert.equal(res.status, 400, res.body);
  });

  test('a database that stops answering gives UNAVAILABLE within seconds, and chat works again once it answers', { timeout: 30000 }, async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const socket = await server.connect(server.token({ tenantId }));
    await joinRoom(socket, roomId);
    await chat(socket, roomId, 'before');
    // Act
    proxy.freeze(true);
    let frozenAck;
    let notif;
    try {
      await expectFailure(socket, 'message', { type: 'send_message', data: { roomId, message: 'during' } }, 'UNAVAILABLE');
      notif = await request(`${server.url}/api/v1/notifications`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${API_KEY}` },
        body: { userId: uid('u'), title: 'T', message: 'M', type: 'info' },
      });
      frozenAck = await sendMessage(socket, 'send_message', { roomId, message: 'during 2' });
    } finally {
      proxy.freeze(false);
    }
    // Assert
    assert.equal(notif.status, 503, notif.body);
    assert.equal(frozenAck.ok, false, 'the writer answers the next message too (it is not stuck)');
    let res;
    for (let i = 0; i < 20; i++) {
      res = await sendMessage(socket, 'send_message', { roomId, message: 'after' });
      if (res.ok) break;
    }
    assert.equal(res.ok, true, `chat recovers: ${JSON.stringify(res)}`);
  });
});
