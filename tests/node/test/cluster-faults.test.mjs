// PROTOCOL.md §8 "Losing Redis degrades, it does not crash" and a node that dies, with real
// processes: two gateways on one redis-server and one PostgreSQL database, nginx in front.
// Redis stopped mid-traffic: local delivery goes on, /readyz says 503, connects still work, no
// crash; Redis back: the nodes resume by themselves and `join_room { since }` recovers what
// crossed no node meanwhile. A node SIGKILLed: its clients reconnect through nginx to the
// survivor and recover with `since`; its registry entries go, and its users are announced
// offline, within the purge bound.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { chat, joinRoom, request, uid } from './helpers.mjs';
import { metric, requirements, startCluster, until } from './cluster-helpers.mjs';

const skip = requirements('cluster-faults.test.mjs', ['redis-server', 'redis-cli', 'nginx', 'postgres']);

// A dead node's heartbeat expires after three missed beats (NODE_HEARTBEAT_MS) and a survivor
// purges its entries within four: 200 ms beats here so the test is fast. The contract bound is 30 s.
const PURGE_ENV = { NODE_HEARTBEAT_MS: '200' };
const PURGE_BOUND_MS = 30000;

let cluster;
let A;
let B;
before(async () => {
  if (skip) return;
  cluster = await startCluster({ nodes: 2, lb: true, tag: 'faults', env: PURGE_ENV });
  [A, B] = cluster.nodes;
});
afterEach(() => cluster?.closeClients());
after(async () => {
  await cluster?.stop();
});

const readyStatus = async (node) => (await request(`${node.url}/readyz`)).status;

/** Sends from `sender` until `receiver` gets one of those messages live (the bus is back). */
async function crossNodeWorks(sender, receiver, roomId, what) {
  let n = 0;
  await until(async () => {
    const sent = await chat(sender, roomId, `probe-${n++}`);
    try {
      await receiver.inbox.next('chat_message', (m) => m.id === sent.id, 300);
      return true;
    } catch {
      return false;
    }
  }, what, 20000, 0);
}

describe('Redis stopped mid-traffic', { skip }, () => {
  test('local delivery goes on, /readyz says 503, connects work; back, the nodes resume and since recovers', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const [a1, a2] = [await A.connect(A.token({ tenantId })), await A.connect(A.token({ tenantId }))];
    const b = await B.connect(B.token({ tenantId }));
    for (const s of [a1, a2, b]) await joinRoom(s, roomId);
    const before = await chat(a1, roomId, 'before');
    for (const s of [a2, b]) await s.inbox.next('chat_message', (m) => m.id === before.id);

    // Act: Redis goes away
    await cluster.redis.stop();

    // Assert: each node says so, and serves its own clients meanwhile
    for (const node of [A, B]) await until(async () => (await readyStatus(node)) === 503, `${node.id} /readyz 503 without Redis`);
    const during = [];
    for (let i = 0; i < 5; i++) during.push(await chat(a1, roomId, `during-${i}`));
    for (const m of during) await a2.inbox.next('chat_message', (x) => x.id === m.id);
    const late = await A.connect(A.token({ tenantId }));
    await joinRoom(late, roomId);
    const bLocal = await chat(b, roomId, 'b-during');
    assert.equal(typeof bLocal.seq, 'number', 'node 2 still stores and acks');
    assert.equal(A.child.exitCode, null, 'node 1 alive');
    assert.equal(B.child.exitCode, null, 'node 2 alive');

    // Act: Redis comes back (empty: nothing of the old state survives)
    await cluster.redis.start();

    // Assert: ready again and delivering across nodes, by themselves
    for (const node of [A, B]) await until(async () => (await readyStatus(node)) === 200, `${node.id} /readyz 200 with Redis back`, 20000);
    await crossNodeWorks(a1, b, roomId, 'node 1 → node 2 delivery after Redis came back');
    await crossNodeWorks(b, a1, roomId, 'node 2 → node 1 delivery after Redis came back');

    // A fresh socket on node 2 replays everything since `before`, gap-free.
    const fresh = await B.connect(B.token({ tenantId }));
    await joinRoom(fresh, roomId, { since: before.seq });
    for (const m of during) await fresh.inbox.next('chat_message', (x) => x.id === m.id);
    const seqs = fresh.inbox.all('chat_message').map((m) => m.seq);
    assert.deepEqual(seqs, seqs.map((_, i) => before.seq + 1 + i), `replay gap-free: ${seqs}`);
  });

  test('a member still in the room that rejoins with since after the outage gets what it missed', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const a = await A.connect(A.token({ tenantId }));
    const b = await B.connect(B.token({ tenantId }));
    await joinRoom(a, roomId);
    await joinRoom(b, roomId);
    const before = await chat(a, roomId, 'before');
    await b.inbox.next('chat_message', (m) => m.id === before.id);
    await cluster.redis.stop();
    await until(async () => (await readyStatus(A)) === 503, 'node 1 /readyz 503 without Redis');
    const missed = [];
    for (let i = 0; i < 3; i++) missed.push(await chat(a, roomId, `missed-${i}`));
    await cluster.redis.start();
    for (const node of [A, B]) await until(async () => (await readyStatus(node)) === 200, `${node.id} /readyz 200`, 20000);
    await crossNodeWorks(a, b, roomId, 'delivery across nodes again');
    // Act: the client knows Redis was away (or just reconnects its rooms) and rejoins in place
    await joinRoom(b, roomId, { since: before.seq });
    // Assert: the three it never got live arrive now, once each
    for (const m of missed) await b.inbox.next('chat_message', (x) => x.id === m.id);
    for (const m of missed) assert.equal(b.inbox.all('chat_message', (x) => x.id === m.id).length, 1, 'once');
  });
});

/**
 * Connects through the load balancer from successive loopback addresses until one lands on
 * `nodes[target]` (seen in the nodes' own connection gauges); `opts` are client options.
 */
async function connectVia(lb, nodes, target, token, opts, tried) {
  const gauges = () => Promise.all(nodes.map((n) => metric(n.url, 'websocket_connections_total')));
  for (let i = 2; i < 250; i++) {
    const from = `127.0.${i % 7}.${i}`;
    if (tried.has(from)) continue;
    tried.add(from);
    const before = await gauges();
    const socket = await lb.connect(token, { from, ...opts });
    const now = await until(async () => {
      const g = await gauges();
      return g.some((v, k) => v > before[k]) ? g : null;
    }, 'the new connection in a node gauge');
    if (now[target] > before[target]) return socket;
    socket.close();
    // Its close must show before the next attempt reads the gauges.
    await until(async () => (await gauges()).every((v, k) => v <= before[k]), 'the refused attempt to close');
  }
  throw new Error(`no loopback address hashed to ${nodes[target].id}`);
}

describe('a node killed with SIGKILL', { skip }, () => {
  test('its clients reconnect through nginx to the survivor and recover with since; its registry entries go', async () => {
    // Arrange: through nginx, a websocket and a polling client on node 1, an observer on node 2
    const tenantId = uid('t');
    const roomId = uid('room');
    const reconnecting = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 500, randomizationFactor: 0 };
    const wsUser = uid('u');
    const pollUser = uid('u');
    const goneUser = uid('u');
    const tried = new Set();
    const ws = await connectVia(cluster.lb, [A, B], 0, cluster.token({ sub: wsUser, tenantId }), reconnecting, tried);
    const poll = await connectVia(cluster.lb, [A, B], 0, cluster.token({ sub: pollUser, tenantId }), { ...reconnecting, transports: ['polling'] }, tried);
    const gone = await connectVia(cluster.lb, [A, B], 0, cluster.token({ sub: goneUser, tenantId }), {}, tried);
    const observer = await B.connect(B.token({ tenantId }));
    for (const s of [ws, poll, observer]) await joinRoom(s, roomId);
    const first = await chat(observer, roomId, 'first');
    for (const s of [ws, poll]) await s.inbox.next('chat_message', (m) => m.id === first.id);
    const oldSids = [ws, poll, gone].map((s) => s.connectedPayload.connectionId);
    await until(() => oldSids.every((sid) => cluster.redis.cli('EXISTS', `ws:connection:${sid}`) === '1'), 'the registry to hold node 1 connections');

    // Act
    await A.kill();
    const missed = [];
    for (let i = 0; i < 3; i++) missed.push(await chat(observer, roomId, `missed-${i}`));

    // Assert: both reconnect by themselves through nginx (now to node 2) and recover
    for (const s of [ws, poll]) {
      await s.inbox.next('disconnect', () => true, 10000);
      await s.inbox.next('connected', (c) => !oldSids.includes(c.connectionId), 15000);
      await joinRoom(s, roomId, { since: first.seq });
      for (const m of missed) await s.inbox.next('chat_message', (x) => x.id === m.id);
      const after = await chat(observer, roomId, `after-${s.io.opts.transports[0]}`);
      await s.inbox.next('chat_message', (x) => x.id === after.id);
      const seqs = s.inbox.all('chat_message', (m) => m.roomId === roomId).map((m) => m.seq);
      assert.equal(new Set(seqs).size, seqs.length, `no duplicate: ${seqs}`);
    }
    // The dead node's entries are purged by the survivor, and its users announced offline.
    await until(
      () => oldSids.every((sid) => cluster.redis.cli('EXISTS', `ws:connection:${sid}`) === '0'),
      'node 1 connection keys purged',
      PURGE_BOUND_MS,
      200,
    );
    for (const [sub, sid] of [[wsUser, oldSids[0]], [pollUser, oldSids[1]], [goneUser, oldSids[2]]]) {
      const members = cluster.redis.cli('SMEMBERS', `ws:user:${sub}:connections`).split('\n');
      assert.ok(!members.includes(sid), `ws:user:${sub}:connections still lists ${sid}`);
      assert.ok(!cluster.redis.cli('SMEMBERS', `ws:tenant:${tenantId}:connections`).split('\n').includes(sid));
    }
    await observer.inbox.next('user_status', (d) => d.userId === goneUser && d.status === 'offline', PURGE_BOUND_MS);
    const stats = await until(async () => {
      const r = await B.api('/stats');
      return r.json?.nodes?.every((n) => n.id !== 'node-1') ? r.json : null;
    }, '/stats without the dead node', PURGE_BOUND_MS, 200);
    assert.deepEqual(stats.nodes.map((n) => n.id), ['node-2']);
    assert.equal(stats.users[goneUser], undefined, JSON.stringify(stats.users));
    assert.equal(stats.users[wsUser], 1, 'the reconnected user counts once');
  });
});
