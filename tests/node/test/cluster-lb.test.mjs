// The shipped load balancer config (deploy/nginx/aegisx-realtime.conf) in front of two gateways
// on a 3-master Redis Cluster (sharded pub/sub) and one PostgreSQL database. Through nginx: both
// transports and the upgrade from polling; polling sessions stay on their node (sticky by
// client address) while clients spread over both nodes chat in one room; the API, health and
// ingest (`PUBLISH websocket:events` on a cluster node) work as on one node.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ack, chat, joinRoom, request, uid } from './helpers.mjs';
import { endpoint, metric, redisCli, requirements, startCluster, startHaproxy, until } from './cluster-helpers.mjs';

const skip = requirements('cluster-lb.test.mjs', ['redis-server', 'redis-cli', 'nginx', 'haproxy', 'postgres']);

let cluster;
let A;
let B;
let lb;
before(async () => {
  if (skip) return;
  cluster = await startCluster({ nodes: 2, redis: 'cluster', lb: true, tag: 'lb' });
  [A, B] = cluster.nodes;
  lb = cluster.lb;
});
afterEach(() => cluster?.closeClients());
after(async () => {
  await cluster?.stop();
});

const gauges = () => Promise.all([A, B].map((n) => metric(n.url, 'websocket_connections_total')));

describe('through nginx, on a Redis Cluster', { skip }, () => {
  for (const [name, transports] of [
    ['websocket', ['websocket']],
    ['polling', ['polling']],
    ['polling upgraded to websocket', ['polling', 'websocket']],
  ]) {
    test(`${name}: connect, join, chat and get it back`, async () => {
      // Arrange
      const tenantId = uid('t');
      const roomId = uid('room');
      const s = await lb.connect(cluster.token({ tenantId }), { transports });
      // Act
      await joinRoom(s, roomId);
      const sent = await chat(s, roomId, `via ${name}`);
      // Assert
      const got = await s.inbox.next('chat_message', (m) => m.id === sent.id);
      assert.equal(got.seq, sent.seq);
      if (transports.length === 2) {
        await until(() => s.io.engine.transport.name === 'websocket', 'the upgrade to websocket through nginx');
        const again = await chat(s, roomId, 'after upgrade');
        await s.inbox.next('chat_message', (m) => m.id === again.id);
      }
    });
  }

  test('clients from many addresses spread over both nodes, polling ones stay sticky, and all chat in one room', async () => {
    await spreadAndChat(lb, 10);
  });

  test('the shipped HAProxy config does the same: both transports, sticky, spread over both nodes', async () => {
    const haproxy = await startHaproxy([A, B].map((n) => `127.0.0.1:${n.port}`));
    const ep = endpoint(haproxy.url);
    try {
      await spreadAndChat(ep, 40);
      assert.equal((await request(`${haproxy.url}/metrics`)).status, 404);
    } finally {
      ep.closeClients();
      await haproxy.stop();
    }
  });


  test('the API, /healthz and /readyz answer through nginx; /metrics is per node, not proxied', async () => {
    assert.equal((await request(`${lb.url}/healthz`)).status, 200);
    const ready = await request(`${lb.url}/readyz`);
    assert.equal(ready.status, 200, ready.body);
    assert.equal((await request(`${lb.url}/metrics`)).status, 404);
    const stats = await lb.api('/stats');
    assert.equal(stats.status, 200, stats.body);
    assert.deepEqual(stats.json.nodes.map((n) => n.id).sort(), ['node-1', 'node-2']);
    assert.equal((await request(`${lb.url}/api/v1/stats`)).status, 401, 'the API key is still required');
  });

  test('a notification posted through nginx reaches the user on both nodes; presence crosses the nodes', async () => {
    // Arrange
    const tenantId = uid('t');
    const sub = uid('u');
    const watcher = await A.connect(A.token({ tenantId }));
    const onB = await B.connect(B.token({ sub, tenantId }));
    await watcher.inbox.next('user_status', (d) => d.userId === sub && d.status === 'online');
    const onA = await A.connect(A.token({ sub, tenantId }));
    // Act
    const res = await lb.api('/notifications', { method: 'POST', body: { userId: sub, tenantId, title: 'T', message: 'M', type: 'info' } });
    // Assert
    assert.equal(res.status, 201, res.body);
    for (const s of [onA, onB]) await s.inbox.next('notification', (n) => n.id === res.json.id);
    const listed = await ack(watcher, 'list_online', {});
    assert.equal(listed.users[sub]?.status, 'online', JSON.stringify(listed));
  });

  test('ingest: a PUBLISH on websocket:events at any cluster node reaches both gateways', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const onA = await A.connect(A.token({ tenantId }));
    const onB = await B.connect(B.token({ tenantId }));
    for (const s of [onA, onB]) await joinRoom(s, roomId);
    const timestamp = new Date().toISOString();
    // Act: plain PUBLISH at each master in turn (Redis Cluster forwards it to every node)
    for (const [i, port] of cluster.redis.ports.entries()) {
      const event = { type: 'chat_message', data: { userId: 'bot', message: `ingest-${i}` }, tenantId, roomId, timestamp };
      redisCli(port, 'PUBLISH', 'websocket:events', JSON.stringify(event));
    }
    // Assert: each stored once, delivered once to each, with its seq
    for (let i = 0; i < cluster.redis.ports.length; i++) {
      for (const s of [onA, onB]) await s.inbox.next('chat_message', (m) => m.message === `ingest-${i}`);
    }
    const history = await lb.api(`/rooms/${roomId}/messages?tenantId=${tenantId}`);
    assert.equal(history.json.messages.length, cluster.redis.ports.length, history.body);
    for (const s of [onA, onB]) assert.equal(s.inbox.all('chat_message').length, cluster.redis.ports.length);
  });
});

/**
 * 16 clients through `ep` from distinct addresses (third octet from `subnet`), every other one
 * polling only (each of its requests must reach the node holding its session, or the session
 * is unknown there): both nodes get some, and all chat in one room.
 */
async function spreadAndChat(ep, subnet) {
  const tenantId = uid('t');
  const roomId = uid('room');
  // Every earlier test's clients are closed: start from empty nodes.
  await until(async () => (await gauges()).every((g) => g === 0), 'the earlier clients to be gone');
  const clients = [];
  for (let i = 0; i < 16; i++) {
    const from = `127.0.${subnet + i}.${20 + i}`;
    const transports = i % 2 ? ['polling'] : ['websocket'];
    clients.push(await ep.connect(cluster.token({ tenantId }), { from, transports }));
  }
  const after = await until(async () => {
    const g = await gauges();
    return g[0] + g[1] === 16 ? g : null;
  }, 'the 16 connections in the node gauges');
  assert.ok(after[0] > 0 && after[1] > 0, `both nodes hold some: ${after}`);
  for (const c of clients) await joinRoom(c, roomId);
  // Act
  const acks = [];
  for (const c of clients) acks.push(await chat(c, roomId, `from ${c.id}`));
  // Assert: every client has every message, in the one seq order
  const seqs = acks.map((a) => a.seq);
  for (const c of clients) {
    for (const a of acks) await c.inbox.next('chat_message', (m) => m.id === a.id);
    assert.deepEqual(c.inbox.all('chat_message').map((m) => m.seq), seqs);
    assert.equal(c.connected, true);
  }
}
