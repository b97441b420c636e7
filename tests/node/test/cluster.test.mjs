// PROTOCOL.md §8 with real processes: two gateways (node-1, node-2) sharing one redis-server and
// one PostgreSQL database. A client on node 1 and a client on node 2 must see each other exactly
// as on one node: room chat with one `seq` sequence, `since` replay of what the other node
// wrote, notifications and mark-read, every publish target (and nothing leaked to others),
// presence, the shared rate limit and connection cap, private-room revoke, disconnect-user,
// `/stats` for the cluster, and ingest on `websocket:events`.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ack, chat, disconnected, joinRoom, sendMessage, uid } from './helpers.mjs';
import { metric, requirements, startCluster, until } from './cluster-helpers.mjs';

const skip = requirements('cluster.test.mjs');
const RATE = 20;
const CAP = 3;

let cluster;
let A;
let B;
before(async () => {
  if (skip) return;
  cluster = await startCluster({
    nodes: 2,
    tag: 'cluster',
    env: { RATE_LIMIT_PER_MINUTE: String(RATE), MAX_CONNECTIONS_PER_USER: String(CAP) },
  });
  [A, B] = cluster.nodes;
});
afterEach(() => cluster?.closeClients());
after(async () => {
  await cluster?.stop();
});

/** A message sent after `marker` on the same path arrived, so `what` would have arrived too. */
function never(socket, event, pred, what) {
  assert.equal(socket.inbox.all(event, pred).length, 0, `${what} arrived`);
}

describe('two nodes on one Redis', { skip }, () => {
  // First in the file: node 2 has no socket yet, so nothing at all is for it.
  test('a node with no member of a room receives none of its traffic; with one, it does', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const busIn = () => metric(B.url, 'aegisx_bus_messages_total', { direction: 'in' });
    const before = await busIn();
    const [a1, a2] = [await A.connect(A.token({ tenantId })), await A.connect(A.token({ tenantId }))];
    await joinRoom(a1, roomId);
    await joinRoom(a2, roomId);
    // Act
    const sent = [];
    for (let i = 0; i < 10; i++) sent.push(await chat(a1, roomId, `local-${i}`));
    for (const m of sent) await a2.inbox.next('chat_message', (x) => x.id === m.id);
    // Assert: node 2 got none of the room's (or the tenant's presence) traffic
    assert.equal(await busIn(), before, 'node 2 received bus messages it has no socket for');
    // With a member on node 2, the room's messages reach it (the metric counts them).
    const b = await B.connect(B.token({ tenantId }));
    await joinRoom(b, roomId);
    const next = await chat(a1, roomId, 'now node 2 too');
    await b.inbox.next('chat_message', (x) => x.id === next.id);
    assert.ok((await busIn()) > before, 'the metric counts what node 2 receives');
  });

  test('room chat across nodes: every member gets every message once, in one seq sequence', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const a = await A.connect(A.token({ tenantId }));
    const b = await B.connect(B.token({ tenantId }));
    await joinRoom(a, roomId);
    await joinRoom(b, roomId);
    // Act: both nodes write the room, interleaved
    const acks = [];
    for (let i = 0; i < 10; i++) acks.push(await chat(i % 2 ? b : a, roomId, `m${i}`));
    // Assert
    const seqs = acks.map((x) => x.seq);
    const first = seqs[0];
    assert.deepEqual(seqs, seqs.map((_, i) => first + i), `one gap-free sequence: ${seqs}`);
    for (const s of [a, b]) {
      for (let i = 0; i < 10; i++) await s.inbox.next('chat_message', (m) => m.message === `m${i}`);
      const got = s.inbox.all('chat_message', (m) => m.roomId === roomId);
      assert.deepEqual(got.map((m) => m.seq), seqs, 'each message once, in seq order');
    }
  });

  test('a client on node 2 replays with since what was written on node 1', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const a = await A.connect(A.token({ tenantId }));
    await joinRoom(a, roomId);
    const sent = [];
    for (let i = 0; i < 4; i++) sent.push(await chat(a, roomId, `r${i}`));
    // Act
    const late = await B.connect(B.token({ tenantId }));
    await joinRoom(late, roomId, { since: sent[0].seq });
    // Assert: the three after the first, in order, before anything live
    for (let i = 1; i < 4; i++) await late.inbox.next('chat_message', (m) => m.message === `r${i}`);
    assert.deepEqual(late.inbox.all('chat_message').map((m) => m.seq), sent.slice(1).map((x) => x.seq));
    const live = await chat(a, roomId, 'live');
    const got = await late.inbox.next('chat_message', (m) => m.message === 'live');
    assert.equal(got.seq, live.seq);
    assert.equal(late.inbox.all('chat_message').length, 4, 'no duplicate of the replay');
  });

  test('a notification created through node 1 reaches the user on both nodes; mark-read on node 2 reaches both', async () => {
    // Arrange
    const sub = uid('u');
    const onA = await A.connect(A.token({ sub }));
    const onB = await B.connect(B.token({ sub }));
    // Act
    const res = await A.api('/notifications', { method: 'POST', body: { userId: sub, title: 'T', message: 'M', type: 'info' } });
    assert.equal(res.status, 201, res.body);
    const id = res.json.id;
    // Assert
    for (const s of [onA, onB]) assert.equal((await s.inbox.next('notification', (n) => n.id === id)).title, 'T');
    const read = await sendMessage(onB, 'mark_notification_read', { notificationId: id });
    assert.equal(read.ok, true, JSON.stringify(read));
    for (const s of [onA, onB]) await s.inbox.next('notification_read', (n) => n.notificationId === id);
    const listed = await B.api(`/users/${sub}/notifications?unread=true`);
    assert.equal(listed.status, 200);
    assert.equal(JSON.stringify(listed.json).includes(id), false, 'read on every node: no longer unread');
  });

  test('every publish target reaches its sockets on the other node, and no one else', async () => {
    // Arrange: target user, tenant, room on node 2; bystanders of another tenant on node 2
    const tenantId = uid('t');
    const other = uid('t');
    const roomId = uid('room');
    const user = await B.connect(B.token({ tenantId }));
    const member = await B.connect(B.token({ tenantId }));
    await joinRoom(member, roomId);
    const stranger = await B.connect(B.token({ tenantId: other }));
    await joinRoom(stranger, roomId); // the same room id in another tenant
    const publish = (target, event, data) => A.api('/publish', { method: 'POST', body: { target, event, data } });
    // Act
    assert.equal((await publish({ userId: user.connectedPayload.userId }, 'to_user', { n: 1 })).status, 202);
    assert.equal((await publish({ tenantId }, 'to_tenant', { n: 2 })).status, 202);
    assert.equal((await publish({ tenantId, roomId }, 'to_room', { n: 3 })).status, 202);
    assert.equal((await publish({ all: true }, 'to_all', { n: 4 })).status, 202);
    // Assert
    assert.deepEqual(await user.inbox.next('to_user'), { n: 1 });
    for (const s of [user, member]) assert.deepEqual(await s.inbox.next('to_tenant'), { n: 2 });
    assert.deepEqual(await member.inbox.next('to_room'), { n: 3 });
    for (const s of [user, member, stranger]) assert.deepEqual(await s.inbox.next('to_all'), { n: 4 });
    // Published in this order from one node: once `to_all` arrived, a leak would have too.
    never(member, 'to_user', () => true, 'a user publish at another user');
    never(user, 'to_room', () => true, 'a room publish at a non-member');
    for (const e of ['to_user', 'to_tenant', 'to_room']) never(stranger, e, () => true, `${e} in another tenant`);
  });

  test('presence is cluster-wide: a user online on node 1 is seen from node 2, and its going offline too', async () => {
    // Arrange
    const tenantId = uid('t');
    const watcher = await B.connect(B.token({ tenantId }));
    // Act
    const sub = uid('u');
    const onA = await A.connect(A.token({ sub, tenantId }));
    // Assert
    await watcher.inbox.next('user_status', (d) => d.userId === sub && d.status === 'online');
    const listed = await ack(watcher, 'list_online', {});
    assert.equal(listed.ok, true, JSON.stringify(listed));
    assert.equal(listed.users[sub]?.status, 'online', JSON.stringify(listed));
    const viaApi = await B.api(`/presence?tenantId=${tenantId}&userIds=${sub}`);
    assert.equal(viaApi.json.users[sub]?.status, 'online', viaApi.body);
    // A second connection on the other node is no new transition; the last one closing is.
    const onB = await B.connect(B.token({ sub, tenantId }));
    // Node 2 counts a connection in its presence tick, after `connected`: a probe connected
    // after it and seen online means that tick ran. (Closing onA before it may announce a
    // short offline/online flap: a window of one tick, not covered here.)
    const probeB = await B.connect(B.token({ tenantId }));
    await watcher.inbox.next('user_status', (d) => d.userId === probeB.connectedPayload.userId && d.status === 'online');
    onA.close();
    const probe = await A.connect(A.token({ tenantId }));
    await watcher.inbox.next('user_status', (d) => d.userId === probe.connectedPayload.userId && d.status === 'online');
    assert.deepEqual(watcher.inbox.all('user_status', (d) => d.userId === sub).map((d) => d.status), ['online']);
    onB.close();
    await watcher.inbox.next('user_status', (d) => d.userId === sub && d.status === 'offline');
  });

  // Node 2 counts a connection in the cluster's presence directory only at its next tick, after
  // `connected`; without the cluster's minimum grace (two ticks) node 1 saw the user's count drop
  // to 0 and announced offline, then online again (10 of 10 tries). The contract (§3) allows
  // offline only when the last connection anywhere closes.
  test('a user who connects on node 2 and then closes on node 1 is never announced offline', async () => {
    // Arrange
    const tenantId = uid('t');
    const sub = uid('u');
    const watcher = await B.connect(B.token({ tenantId }));
    const onA = await A.connect(A.token({ sub, tenantId }));
    await watcher.inbox.next('user_status', (d) => d.userId === sub && d.status === 'online');
    // Act: the second connection is acknowledged (connected) before the first closes
    await B.connect(B.token({ sub, tenantId }));
    onA.close();
    // Assert: both nodes' ticks after the close have run once probes of each are announced
    for (const node of [A, B]) {
      const probe = await node.connect(node.token({ tenantId }));
      await watcher.inbox.next('user_status', (d) => d.userId === probe.connectedPayload.userId && d.status === 'online');
    }
    assert.deepEqual(watcher.inbox.all('user_status', (d) => d.userId === sub).map((d) => d.status), ['online']);
  });

  test('the rate limit is shared: a user gets RATE_LIMIT_PER_MINUTE messages in all, whichever node', async () => {
    // Arrange
    const sub = uid('u');
    const roomId = uid('room');
    const onA = await A.connect(A.token({ sub }));
    const onB = await B.connect(B.token({ sub }));
    await joinRoom(onA, roomId);
    await joinRoom(onB, roomId);
    // Act: half the budget on each node
    for (let i = 0; i < RATE / 2; i++) await chat(onA, roomId, `a${i}`);
    for (let i = 0; i < RATE / 2; i++) await chat(onB, roomId, `b${i}`);
    // Assert
    for (const s of [onA, onB]) {
      const over = await sendMessage(s, 'send_message', { roomId, message: 'over' });
      assert.equal(over.ok, false, JSON.stringify(over));
      assert.equal(over.error.code, 'RATE_LIMITED');
    }
  });

  test('the connection cap is shared: MAX_CONNECTIONS_PER_USER in all, and a slot freed on one node serves the other', async () => {
    // Arrange
    const sub = uid('u');
    const token = A.token({ sub });
    const held = [await A.connect(token), await B.connect(token), await A.connect(token)];
    // Act / Assert
    const refused = await B.refused(token);
    assert.equal(refused.message, 'Too many connections');
    held[0].close();
    await until(async () => {
      try {
        await B.connect(token);
        return true;
      } catch (e) {
        if (e.message !== 'Too many connections') throw e;
        return false;
      }
    }, 'the freed slot to be usable on node 2', 10000, 100);
  });

  test('a private-room revoke made through node 1 makes the socket on node 2 leave at once', async () => {
    // Arrange
    const tenantId = uid('t');
    const sub = uid('u');
    const roomId = `private:${uid('r')}`;
    const granted = await A.api(`/rooms/${roomId}/members/${sub}?tenantId=${tenantId}`, { method: 'PUT' });
    assert.equal(granted.status, 200, granted.body);
    const s = await B.connect(B.token({ sub, tenantId }));
    await joinRoom(s, roomId);
    const keeper = await A.connect(A.token({ tenantId, rooms: [roomId] }));
    await joinRoom(keeper, roomId);
    // Act
    const revoked = await A.api(`/rooms/${roomId}/members/${sub}?tenantId=${tenantId}`, { method: 'DELETE' });
    assert.deepEqual(revoked.json, { revoked: true });
    // Assert
    assert.deepEqual(await s.inbox.next('left_room'), { roomId });
    const probe = await chat(keeper, roomId, 'after revoke');
    await keeper.inbox.next('chat_message', (m) => m.id === probe.id);
    const refused = await ack(s, 'join_room', { roomId });
    assert.equal(refused.error?.code, 'ACCESS_DENIED', JSON.stringify(refused));
    never(s, 'chat_message', (m) => m.id === probe.id, 'a message after the revoke');
  });

  test('disconnect-user through node 1 closes the user on both nodes and counts them all', async () => {
    // Arrange
    const sub = uid('u');
    const sockets = [await A.connect(A.token({ sub })), await B.connect(B.token({ sub })), await B.connect(B.token({ sub }))];
    // Act
    const res = await A.api(`/users/${sub}/disconnect`, { method: 'POST' });
    // Assert
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(res.json, { disconnected: 3 });
    for (const s of sockets) assert.equal(await disconnected(s), 'io server disconnect');
  });

  test('/stats answers for the cluster, with both nodes', async () => {
    // Arrange
    const tenantId = uid('t');
    const sub = uid('u');
    const held = [await A.connect(A.token({ sub, tenantId })), await B.connect(B.token({ sub, tenantId }))];
    // Act / Assert (either node answers for both)
    for (const node of [A, B]) {
      const stats = await until(async () => {
        const r = await node.api('/stats');
        return r.json?.users?.[sub] === 2 ? r.json : null;
      }, `/stats on ${node.id} to count ${sub} on both nodes`);
      assert.equal(stats.tenants[tenantId], 2);
      const ids = stats.nodes.map((n) => n.id).sort();
      assert.deepEqual(ids, ['node-1', 'node-2']);
      for (const n of stats.nodes) {
        assert.equal(typeof n.connections, 'number');
        assert.ok(n.connections >= 1, JSON.stringify(n));
        assert.ok(!Number.isNaN(Date.parse(n.startedAt)), JSON.stringify(n));
      }
      assert.equal(stats.totalConnections, stats.nodes.reduce((s, n) => s + n.connections, 0));
    }
    assert.equal(held.length, 2);
  });

  test('websocket:events ingest: a PUBLISH reaches clients on both nodes; a chat_message is stored once', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const onA = await A.connect(A.token({ tenantId }));
    const onB = await B.connect(B.token({ tenantId }));
    await joinRoom(onA, roomId);
    await joinRoom(onB, roomId);
    const pub = (event) => cluster.redis.cli('PUBLISH', 'websocket:events', JSON.stringify(event));
    const timestamp = new Date().toISOString();
    // Act
    // As the blueprint's broadcastToAll publishes it: `data` is the `broadcast` payload `{ type, data }`.
    pub({ type: 'broadcast', data: { type: 'news', data: { n: 'b' } }, timestamp });
    pub({ type: 'user_status', data: { userId: 'ext', status: 'away' }, tenantId, timestamp });
    pub({ type: 'chat_message', data: { userId: 'bot', message: 'ingested' }, tenantId, roomId, timestamp });
    // Assert
    for (const s of [onA, onB]) {
      assert.deepEqual(await s.inbox.next('broadcast'), { type: 'news', data: { n: 'b' } });
      await s.inbox.next('user_status', (d) => d.userId === 'ext' && d.status === 'away');
      const m = await s.inbox.next('chat_message', (x) => x.message === 'ingested');
      assert.equal(typeof m.seq, 'number');
    }
    // Both nodes subscribe to the channel; exactly one may store it.
    const history = await A.api(`/rooms/${roomId}/messages?tenantId=${tenantId}`);
    assert.equal(history.status, 200, history.body);
    assert.equal(history.json.messages.filter((m) => m.message === 'ingested').length, 1, history.body);
    for (const s of [onA, onB]) assert.equal(s.inbox.all('chat_message', (x) => x.message === 'ingested').length, 1);
    // Malformed JSON is counted, never fatal: the channel still works after it.
    cluster.redis.cli('PUBLISH', 'websocket:events', '{not json');
    pub({ type: 'broadcast', data: { type: 'news', data: { n: 'after' } }, timestamp });
    for (const s of [onA, onB]) await s.inbox.next('broadcast', (d) => d.data?.n === 'after');
  });
});
