// Two gateway processes on one Redis (a redis-server of the test's own, on a free port) and one
// PostgreSQL database (a schema of the test's own): whatever node a client is on, it gets room
// chat, notifications, tenant and broadcast publishes, disconnects and ingested events exactly
// as on one node; and losing Redis degrades (local delivery goes on, /readyz 503) until it is
// back, when the nodes resubscribe by themselves. redis-server and PostgreSQL are required
// under CI=true and skipped loudly elsewhere.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import net from 'node:net';

import { chat, joinRoom, request, startServer, uid, withTimeout } from './helpers.mjs';
import { freePort } from './cluster-helpers.mjs';

const PG_URL = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const API_KEY = 'cluster-bus-api-key-0123456789';
const schema = `bus_${Math.floor(Date.now() / 1000)}_${process.pid}`;

function psql(sql) {
  execFileSync('psql', [PG_URL, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10000 });
}


function missing(what, why) {
  if (process.env.CI === 'true') throw new Error(`${what} is required under CI=true: ${why}`);
  console.error(`\n*** SKIPPED: cluster-bus.test.mjs (${what}: ${why}) ***\n`);
  return false;
}

let available = true;
try {
  execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
} catch (e) {
  available = missing('redis-server', e.message);
}
if (available) {
  try {
    psql(`CREATE SCHEMA ${schema}`);
  } catch (e) {
    available = missing('PostgreSQL', String(e.stderr ?? e.message).trim());
  }
}

/** Polls `cond` until it holds (fails after `ms`). */
async function until(what, cond, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const redis = {
  port: 0,
  child: null,
  async start() {
    this.child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    await until('redis-server listening', () =>
      new Promise((r) => {
        const c = net.connect(this.port, '127.0.0.1');
        c.once('connect', () => {
          c.destroy();
          r(true);
        });
        c.once('error', () => r(false));
      }),
    );
  },
  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await exited;
  },
  publish(channel, message) {
    return Number(execFileSync('redis-cli', ['-p', String(this.port), 'PUBLISH', channel, message], { timeout: 5000 }).toString().trim());
  },
};

const api = (server, path, { method = 'POST', body } = {}) =>
  request(`${server.url}/api/v1${path}`, { method, headers: { Authorization: `Bearer ${API_KEY}` }, body });

const ready = async (server) => (await request(`${server.url}/readyz`)).status === 200;

let a;
let b;
let c;
before(async () => {
  if (!available) return;
  redis.port = await freePort();
  await redis.start();
  const url = new URL(PG_URL);
  url.searchParams.set('options', `-c search_path=${schema}`);
  const env = { REDIS_URL: `redis://127.0.0.1:${redis.port}`, DATABASE_URL: url.toString(), API_KEYS: API_KEY };
  // One after the other: the first creates the schema's tables.
  a = await startServer({ ...env, NODE_ID: 'node-a' });
  b = await startServer({ ...env, NODE_ID: 'node-b' });
  // A third node that no test connects to (it must get no room traffic).
  c = await startServer({ ...env, NODE_ID: 'node-c' });
  await until('the nodes ready', async () => (await ready(a)) && (await ready(b)) && (await ready(c)));
});
afterEach(() => {
  a?.closeClients();
  b?.closeClients();
});
after(async () => {
  if (!available) return;
  await a?.stop();
  await b?.stop();
  await c?.stop();
  await redis.stop();
  try {
    psql(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } catch {
    // the schema name carries its time; nothing else uses it
  }
});

describe('two gateways on one Redis', { skip: !available && 'redis-server or PostgreSQL not available' }, () => {
  test('room chat crosses nodes both ways, with one seq sequence', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const alice = await a.connect(a.token({ sub: uid('alice'), tenantId }));
    const bob = await b.connect(b.token({ sub: uid('bob'), tenantId }));
    await joinRoom(alice, roomId);
    await joinRoom(bob, roomId);
    // Act
    const first = await chat(alice, roomId, 'from a');
    const atB = await bob.inbox.next('chat_message', (m) => m.message === 'from a');
    const second = await chat(bob, roomId, 'from b');
    const atA = await alice.inbox.next('chat_message', (m) => m.message === 'from b');
    // Assert
    assert.equal(atB.seq, first.seq);
    assert.equal(atA.seq, second.seq);
    assert.equal(second.seq, first.seq + 1, 'one sequence per room across the nodes');
    assert.equal(alice.inbox.all('chat_message').length, 2, 'each message once (no echo)');
    assert.equal(bob.inbox.all('chat_message').length, 2);
  });

  test('room traffic reaches only the nodes with members of the room (room-aware subscriptions)', async () => {
    // Arrange
    const received = async (server) => {
      const text = (await request(`${server.url}/metrics`)).body;
      const m = text.match(/^aegisx_bus_messages_total\{direction="in"\} (\d+)/m);
      return m ? Number(m[1]) : 0;
    };
    const published = async (server) => {
      const text = (await request(`${server.url}/metrics`)).body;
      const m = text.match(/^aegisx_bus_messages_total\{direction="out"\} (\d+)/m);
      return m ? Number(m[1]) : 0;
    };
    const tenantId = uid('t');
    const roomId = uid('room');
    const alice = await a.connect(a.token({ tenantId }));
    const bob = await b.connect(b.token({ tenantId }));
    await joinRoom(alice, roomId);
    await joinRoom(bob, roomId);
    const [bBefore, cBefore, aOutBefore] = [await received(b), await received(c), await published(a)];
    // Act
    for (let i = 0; i < 20; i++) await chat(alice, roomId, `m${i}`);
    await bob.inbox.next('chat_message', (m) => m.message === 'm19');
    // Assert
    assert.ok((await published(a)) - aOutBefore >= 20, 'a published each message once to Redis');
    assert.ok((await received(b)) - bBefore >= 20, 'b, with a member, received them');
    assert.equal((await received(c)) - cBefore, 0, 'c, with no member, received none');
  });

  test('a join with since on one node replays what was written on the other, then goes on live', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const alice = await a.connect(a.token({ tenantId }));
    await joinRoom(alice, roomId);
    const sent = [];
    for (const text of ['one', 'two', 'three']) sent.push(await chat(alice, roomId, text));
    // Act
    const bob = await b.connect(b.token({ tenantId }));
    await joinRoom(bob, roomId, { since: 0 });
    await chat(alice, roomId, 'four');
    // Assert
    const live = await bob.inbox.next('chat_message', (m) => m.message === 'four');
    const got = bob.inbox.all('chat_message').map((m) => m.message);
    assert.deepEqual(got, ['one', 'two', 'three', 'four'], 'no gap, no duplicate');
    assert.equal(live.seq, sent[2].seq + 1);
  });

  test('a notification stored through one node reaches the user on the other', async () => {
    // Arrange
    const userId = uid('u');
    const socket = await a.connect(a.token({ sub: userId }));
    // Act
    const res = await api(b, '/notifications', { body: { userId, title: 'T', message: 'across', type: 'info' } });
    // Assert
    assert.equal(res.status, 201, res.body);
    const n = await socket.inbox.next('notification', (x) => x.message === 'across');
    assert.equal(n.id, res.json.id);
  });

  test('user, tenant and broadcast publishes reach sockets on the other node', async () => {
    // Arrange
    const tenantId = uid('t');
    const userId = uid('u');
    const user = await b.connect(b.token({ sub: userId }));
    const member = await b.connect(b.token({ tenantId }));
    // Act
    const results = await Promise.all([
      api(a, '/publish', { body: { target: { userId }, event: 'to_user', data: { n: 1 } } }),
      api(a, '/publish', { body: { target: { tenantId }, event: 'to_tenant', data: { n: 2 } } }),
      api(a, '/publish', { body: { target: { all: true }, event: 'to_all', data: { n: 3 } } }),
    ]);
    // Assert
    for (const r of results) assert.equal(r.status, 202, r.body);
    assert.deepEqual(await user.inbox.next('to_user'), { n: 1 });
    assert.deepEqual(await member.inbox.next('to_tenant'), { n: 2 });
    assert.deepEqual(await user.inbox.next('to_all'), { n: 3 });
    assert.deepEqual(await member.inbox.next('to_all'), { n: 3 });
    assert.equal(user.inbox.all('to_tenant').length, 0, 'a tenant publish stays in the tenant');
  });

  test('POST /users/{id}/disconnect on one node closes the user’s socket on the other', async () => {
    // Arrange
    const userId = uid('u');
    const socket = await b.connect(b.token({ sub: userId }));
    const bystander = await b.connect(b.token());
    // Act
    const res = await api(a, `/users/${userId}/disconnect`);
    // Assert
    assert.equal(res.status, 200, res.body);
    assert.equal(await socket.inbox.next('disconnect'), 'io server disconnect');
    assert.equal(bystander.connected, true);
  });

  test('an event published to websocket:events is handled once: a chat message stored with a seq on both nodes', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const alice = await a.connect(a.token({ tenantId }));
    const bob = await b.connect(b.token({ tenantId }));
    await joinRoom(alice, roomId);
    await joinRoom(bob, roomId);
    const event = { type: 'chat_message', tenantId, roomId, timestamp: new Date().toISOString(), data: { userId: 'backend', message: 'ingested' } };
    // Act
    const receivers = redis.publish('websocket:events', JSON.stringify(event));
    redis.publish('websocket:events', '{not json');
    // Assert
    assert.ok(receivers >= 2, `both nodes listen on websocket:events (${receivers})`);
    const atA = await alice.inbox.next('chat_message', (m) => m.message === 'ingested');
    const atB = await bob.inbox.next('chat_message', (m) => m.message === 'ingested');
    assert.equal(atA.seq, atB.seq);
    assert.equal(atA.userId, 'backend');
    // A message after it comes next in both inboxes: the ingested one was delivered once.
    const next = await chat(alice, roomId, 'after');
    assert.equal(next.seq, atA.seq + 1, 'stored once');
    await bob.inbox.next('chat_message', (m) => m.message === 'after');
    assert.deepEqual(
      bob.inbox.all('chat_message').map((m) => m.message),
      ['ingested', 'after'],
    );
    const history = await api(a, `/rooms/${roomId}/messages?tenantId=${tenantId}`, { method: 'GET' });
    assert.deepEqual(
      history.json.messages.map((m) => m.message),
      ['ingested', 'after'],
    );
    // The malformed one was counted, on every node, and broke nothing.
    const metrics = (await request(`${b.url}/metrics`)).body;
    assert.match(metrics, /aegisx_ingest_events_total\{outcome="malformed"\} [1-9]/);
  });

  test('Redis stopped: local delivery goes on and /readyz is 503; back: the nodes resubscribe by themselves', { timeout: 90000 }, async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const alice = await a.connect(a.token({ tenantId }));
    const carol = await a.connect(a.token({ tenantId }));
    const bob = await b.connect(b.token({ tenantId }));
    for (const s of [alice, carol, bob]) await joinRoom(s, roomId);
    await chat(alice, roomId, 'before');
    await bob.inbox.next('chat_message', (m) => m.message === 'before');
    // Act: Redis goes away
    await redis.stop();
    // Assert: same-node chat still works, and both nodes say they are not ready
    const during = await chat(alice, roomId, 'during');
    await carol.inbox.next('chat_message', (m) => m.message === 'during');
    await until('both nodes not ready', async () => !(await ready(a)) && !(await ready(b)));
    const body = (await request(`${a.url}/readyz`)).json;
    assert.equal(body.bus.status, 'disconnected');
    // Act: Redis is back (a fresh, empty one on the same port)
    await redis.start();
    await until('both nodes ready again', async () => (await ready(a)) && (await ready(b)), 30000);
    // Assert: nobody rejoined, yet cross-node chat flows again
    const after = await chat(alice, roomId, 'after');
    const got = await bob.inbox.next('chat_message', (m) => m.message === 'after');
    assert.equal(got.seq, after.seq);
    // What b missed meanwhile is recovered with since.
    await joinRoom(bob, roomId, { since: during.seq - 1 });
    const recovered = await withTimeout(
      bob.inbox.next('chat_message', (m) => m.message === 'during'),
      5000,
      'the missed message, replayed',
    );
    assert.equal(recovered.seq, during.seq);
  });
});
