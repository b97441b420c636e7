// Joins that must not happen: a `join_room` still queued when its socket left (it would stay in
// the room and in `websocket_room_connections`), and a private-room join overtaking the revoke
// that landed while it waited (PROTOCOL §4, §11).

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ack, chat, joinRoom, request, sendMessage, startServer, uid, withTimeout } from './helpers.mjs';

const API_KEY = 'joins-api-key-0123456789';
let server;
before(async () => {
  server = await startServer({ API_KEYS: API_KEY });
});
afterEach(() => server.closeClients());
after(() => server.stop());

const api = (path, opts = {}) =>
  request(`${server.url}/api/v1${path}`, { ...opts, headers: { Authorization: `Bearer ${API_KEY}`, ...(opts.headers ?? {}) } });

/** Resolves once `pred()` holds, checking each time the server answers `probe()`. */
async function until(what, probe, pred) {
  return withTimeout(
    (async () => {
      for (;;) {
        const v = await probe();
        if (pred(v)) return v;
      }
    })(),
    10000,
    what,
  );
}

describe('joins after the socket left', () => {
  test('a join_room queued behind a replay when the transport closes never joins, nor counts in websocket_room_connections', async () => {
    // Arrange
    const tenantId = uid('t');
    const [busy, late] = [uid('busy'), uid('late')];
    const sender = await server.connect(server.token({ tenantId }));
    await joinRoom(sender, busy);
    // A long replay, so the transport is gone before the joins queued behind it run.
    const sent = await Promise.all(Array.from({ length: 800 }, (_, i) => sendMessage(sender, 'send_message', { roomId: busy, message: `m${i}` }, 30000)));
    assert.ok(sent.every((r) => r.ok));
    const sub = uid('u');
    const leaver = await server.connect(server.token({ sub, tenantId }));
    const n = (await api('/notifications', { method: 'POST', body: { userId: sub, tenantId, title: 'T', message: 'M', type: 'info' } })).json;
    // Act: a replayed join, a plain join and a marker event queued behind it, then the transport goes
    leaver.emit('join_room', { roomId: busy, since: 0 });
    leaver.emit('join_room', { roomId: late });
    leaver.emit('message', { type: 'mark_notification_read', data: { notificationId: n.id } });
    leaver.io.engine.close();
    // Assert: once the marker was handled (the notification is read), so was the late join
    await until(
      'the queued events to be handled',
      () => api(`/users/${encodeURIComponent(sub)}/notifications?unread=true`),
      (res) => res.json.notifications.length === 0,
    );
    const metrics = (await request(`${server.url}/metrics`)).body;
    const label = `room_id="${tenantId}/${late}"`;
    assert.ok(!metrics.includes(label), `the gone socket still counts in ${label}`);
    assert.ok(!metrics.includes(`room_id="${tenantId}/${busy}"} 2`), 'the gone socket counts in the replayed room');
  });
});

describe('a revoke is never overtaken by a join', () => {
  test('a private room revoked right after join_room with since leaves the socket out of the room', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = `private:${uid('p')}`;
    const sub = uid('u');
    assert.equal((await api(`/rooms/${roomId}/members/${sub}?tenantId=${tenantId}`, { method: 'PUT' })).status, 200);
    const sender = await server.connect(server.token({ tenantId, rooms: [roomId] }));
    await joinRoom(sender, roomId);
    for (let i = 0; i < 30; i++) await chat(sender, roomId, `m${i}`);
    const socket = await server.connect(server.token({ sub, tenantId }));
    // Act: the revoke races the join; whichever wins, the socket must end up out of the room
    const joining = ack(socket, 'join_room', { roomId, since: 0 });
    const revoked = await api(`/rooms/${roomId}/members/${sub}?tenantId=${tenantId}`, { method: 'DELETE' });
    assert.equal(revoked.status, 200, revoked.body);
    const res = await joining;
    const probe = await chat(sender, roomId, 'after revoke');
    // Assert
    const send = await ack(socket, 'message', { type: 'send_message', data: { roomId, message: 'x' } });
    assert.equal(send.ok, false, `the socket is still in the room (join answered ${JSON.stringify(res)})`);
    assert.equal(send.error.code, 'NOT_IN_ROOM');
    assert.ok(!socket.inbox.all('chat_message').some((m) => m.id === probe.id), 'a message after the revoke arrived');
  });
});
