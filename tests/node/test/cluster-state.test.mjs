// PROTOCOL.md §8, cluster-wide state: two gateway processes sharing a redis-server this test
// starts on a free port (never the machine's 6379). The connection cap and the rate limit count
// a user's connections and events on both nodes; `/stats` and `POST /users/{id}/disconnect`
// answer for the cluster; presence is counted across nodes. Without redis-server the suite fails
// under CI=true and is skipped loudly otherwise.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';

import { expectFailure, request, sendMessage, startServer, uid, withTimeout } from './helpers.mjs';
import { freePort } from './cluster-helpers.mjs';

const KEY = 'cluster-state-api-key';
const MAX_CONNECTIONS = 3;
const LIMIT = 4;

const haveRedis = spawnSync('redis-server', ['--version']).status === 0;
if (!haveRedis && process.env.CI === 'true') throw new Error('redis-server is required under CI=true');
if (!haveRedis) console.warn('SKIPPED: redis-server not found; cluster-state tests did not run');


async function startRedis(port) {
  port ??= await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  await withTimeout(
    (async () => {
      for (;;) {
        const ok = await new Promise((r) => {
          const c = net.connect(port, '127.0.0.1', () => {
            c.end();
            r(true);
          });
          c.on('error', () => r(false));
        });
        if (ok) return;
        await new Promise((r) => setTimeout(r, 20));
      }
    })(),
    10000,
    'redis-server to listen',
  );
  return { port, child, url: `redis://127.0.0.1:${port}` };
}

const api = (server, path, opts = {}) =>
  request(`${server.url}/api/v1${path}`, { ...opts, headers: { authorization: `Bearer ${KEY}` } });

/** Polls `fn` until it returns a truthy value (or fails after `ms`). */
async function until(what, fn, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let redis;
let a;
let b;
before(async () => {
  if (!haveRedis) return;
  redis = await startRedis();
  const env = (id) => ({
    REDIS_URL: redis.url,
    NODE_ID: id,
    NODE_HEARTBEAT_MS: 200,
    API_KEYS: KEY,
    MAX_CONNECTIONS_PER_USER: MAX_CONNECTIONS,
    RATE_LIMIT_PER_MINUTE: LIMIT,
  });
  [a, b] = await Promise.all([startServer(env('node-a')), startServer(env('node-b'))]);
});
afterEach(() => {
  a?.closeClients();
  b?.closeClients();
});
after(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  redis?.child.kill('SIGKILL');
});

describe('cluster-wide state over Redis', { skip: !haveRedis }, () => {
  test('the connection cap counts the user on every node', async () => {
    // Arrange: the user holds its slots on both nodes
    const user = uid('user');
    const token = a.token({ sub: user });
    await a.connect(token);
    await a.connect(token);
    await b.connect(token);
    // Act: one more, on either node
    const onA = await a.refused(token);
    const onB = await b.refused(token);
    // Assert
    assert.equal(onA.message, 'Too many connections');
    assert.equal(onB.message, 'Too many connections');
  });

  test('a closed connection frees its slot for the other node', async () => {
    const user = uid('user');
    const token = a.token({ sub: user });
    const first = await a.connect(token);
    await a.connect(token);
    await a.connect(token);
    assert.equal((await b.refused(token)).message, 'Too many connections');
    first.close();
    await until('the slot to be free', async () => {
      const r = await api(b, '/stats');
      return (r.json.users[user] ?? 0) === MAX_CONNECTIONS - 1;
    });
    await b.connect(token);
  });

  test('/stats lists both nodes and counts the connections of each', async () => {
    const user = uid('user');
    const tenantId = uid('tenant');
    await a.connect(a.token({ sub: user, tenantId }));
    await b.connect(b.token({ sub: user, tenantId }));
    const r = await api(a, '/stats');
    assert.equal(r.status, 200);
    assert.equal(r.json.users[user], 2);
    assert.equal(r.json.tenants[tenantId], 2);
    const ids = r.json.nodes.map((n) => n.id).sort();
    assert.deepEqual(ids, ['node-a', 'node-b']);
    for (const n of r.json.nodes) {
      assert.equal(typeof n.connections, 'number');
      assert.ok(!Number.isNaN(Date.parse(n.startedAt)), `startedAt ${n.startedAt}`);
    }
    assert.equal(r.json.totalConnections, r.json.nodes.reduce((s, n) => s + n.connections, 0));
    assert.deepEqual((await api(b, '/stats')).json.users[user], 2, 'the same answer from the other node');
  });

  test('disconnect counts the user\'s connections on every node', async () => {
    const user = uid('user');
    await a.connect(a.token({ sub: user }));
    await b.connect(b.token({ sub: user }));
    await b.connect(b.token({ sub: user }));
    const r = await api(a, `/users/${user}/disconnect`, { method: 'POST' });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { disconnected: 3 });
  });

  test('the rate limit counts the user\'s events on every node', async () => {
    const user = uid('user');
    const onA = await a.connect(a.token({ sub: user }));
    const onB = await b.connect(b.token({ sub: user }));
    for (let i = 0; i < LIMIT; i++) {
      const res = await sendMessage(i % 2 ? onB : onA, 'not-a-type', {});
      assert.equal(res.error.code, 'UNKNOWN_EVENT');
    }
    await expectFailure(onA, 'message', { type: 'not-a-type', data: {} }, 'RATE_LIMITED', 'Rate limit exceeded');
    await expectFailure(onB, 'message', { type: 'not-a-type', data: {} }, 'RATE_LIMITED', 'Rate limit exceeded');
  });

  test('a node killed with SIGKILL leaves no entries: a survivor purges them and announces its users offline', async () => {
    // Arrange: a third node holds a user's only connection
    const c = await startServer({ ...a.env, NODE_ID: 'node-c', PORT: 0, DATABASE_URL: undefined });
    const tenantId = uid('tenant');
    const user = uid('user');
    await c.connect(c.token({ sub: user, tenantId }));
    await until('node c and its connection in /stats', async () => {
      const r = await api(a, '/stats');
      return r.json.users[user] === 1 && r.json.nodes.some((n) => n.id === 'node-c');
    });
    // Act
    c.child.kill('SIGKILL');
    await c.exited;
    // Assert: within a few heartbeats (200 ms each here; 30 s at most by the contract)
    await until('node c purged', async () => {
      const r = await api(a, '/stats');
      return r.json.users[user] === undefined && !r.json.nodes.some((n) => n.id === 'node-c');
    });
    // The registry is purged first, its presence counts in the next step of the same purge.
    await until('its presence counts gone with it', async () => {
      const r = await api(b, `/presence?tenantId=${tenantId}&userIds=${user}`);
      return r.json.users[user]?.status === 'offline';
    });
    // The `user_status` offline the purging survivor publishes is checked in
    // tests/cluster_state.rs; reaching sockets on other nodes is the Redis bus's part.
    await c.stop();
  });

  test('presence answers for the cluster: a user online on one node is listed by the other', async () => {
    const tenantId = uid('tenant');
    const user = uid('user');
    const s = await a.connect(a.token({ sub: user, tenantId }));
    const listed = await until('the user to be online on node b', async () => {
      const r = await api(b, `/presence?tenantId=${tenantId}`);
      return r.json?.users?.[user];
    });
    assert.equal(listed.status, 'online');
    s.close();
    await until('the user to be offline on node b', async () => {
      const r = await api(b, `/presence?tenantId=${tenantId}&userIds=${user}`);
      return r.json?.users?.[user]?.status === 'offline';
    });
  });

  // Last: it stops the suite's Redis.
  test('Redis stopped: /readyz is 503 and connects go on, counted per node; Redis back: ready, the connection registered again', async () => {
    assert.equal((await request(`${a.url}/readyz`)).json.redis, 'ok');
    redis.child.kill('SIGKILL');
    await new Promise((r) => redis.child.once('exit', r));
    await until('node a not ready', async () => (await request(`${a.url}/readyz`)).status === 503);
    assert.equal((await request(`${a.url}/readyz`)).json.redis, 'error');
    // Act: a connect while Redis is away
    const user = uid('user');
    const token = a.token({ sub: user });
    await a.connect(token);
    await a.connect(token);
    await a.connect(token);
    assert.equal((await a.refused(token)).message, 'Too many connections', 'the cap still holds, on this node');
    // Redis back, empty: the node re-registers what it holds
    redis = await startRedis(redis.port);
    await until('node a ready again', async () => (await request(`${a.url}/readyz`)).status === 200);
    await until('the connections registered again', async () => (await api(b, '/stats')).json.users?.[user] === 3);
  });
});
