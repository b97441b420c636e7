// What sockets see of server-initiated actions: §11 "every server-initiated disconnect is a
// Socket.IO DISCONNECT" (here through the HTTP API), and §6 "backend services may publish other
// event names; clients receive them as published".

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { RFC3339_UTC, chat, disconnected, joinRoom, request, startServer, uid } from './helpers.mjs';

const API_KEY = 'push-test-api-key-0123456789';
let server;
before(async () => {
  server = await startServer({ API_KEYS: API_KEY });
});
afterEach(() => server.closeClients());
after(() => server.stop());

const api = (method, path, body) =>
  request(`${server.url}/api/v1${path}`, { method, headers: { Authorization: `Bearer ${API_KEY}` }, body });

describe('server-initiated disconnect', () => {
  test('POST /users/{userId}/disconnect ends every connection of the user with io server disconnect', async () => {
    // Arrange
    const tenantId = uid('t');
    const token = server.token({ tenantId });
    const a = await server.connect(token);
    const b = await server.connect(token, { transports: ['polling'] });
    const bystander = await server.connect(server.token({ tenantId }));
    const userId = a.connectedPayload.userId;
    // Act
    const res = await api('POST', `/users/${encodeURIComponent(userId)}/disconnect`);
    // Assert
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(res.json, { disconnected: 2 });
    assert.deepEqual(await Promise.all([disconnected(a), disconnected(b)]), ['io server disconnect', 'io server disconnect']);
    assert.equal(a.active, false, 'the official client does not reconnect by itself');
    assert.equal(b.active, false);
    const offline = await bystander.inbox.next('user_status', (d) => d.userId === userId && d.status === 'offline');
    assert.match(offline.timestamp, RFC3339_UTC);
    assert.equal(bystander.connected, true);
  });

  test('a connection acknowledged but not yet told connected is disconnected too', async () => {
    // Arrange: the CONNECT ack is in, `connected` (and the socket's own rooms) not yet.
    const userId = uid('u');
    const token = server.token({ sub: userId, tenantId: uid('t') });
    const socket = server.client(token);
    await new Promise((resolve) => socket.once('connect', resolve));
    // Act
    const res = await api('POST', `/users/${encodeURIComponent(userId)}/disconnect`);
    // Assert
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(res.json, { disconnected: 1 });
    assert.equal(await disconnected(socket), 'io server disconnect');
  });
});

describe('published events', () => {
  test('an event published to a user reaches its connections under the published name and data', async () => {
    // Arrange
    const socket = await server.connect(server.token({ tenantId: uid('t') }));
    const data = { orderId: 42, items: ['a', 'b'], nested: { ok: true } };
    // Act
    const res = await api('POST', '/publish', { target: { userId: socket.connectedPayload.userId }, event: 'order_shipped', data });
    // Assert
    assert.equal(res.status, 202, res.body);
    assert.deepEqual(await socket.inbox.next('order_shipped'), data);
  });

  test('an event published to a room reaches the room of that tenant only', async () => {
    // Arrange
    const [tA, tB] = [uid('tA'), uid('tB')];
    const roomId = uid('room');
    const inA = await server.connect(server.token({ tenantId: tA }));
    const inB = await server.connect(server.token({ tenantId: tB }));
    await joinRoom(inA, roomId);
    await joinRoom(inB, roomId);
    // Act
    assert.equal((await api('POST', '/publish', { target: { tenantId: tA, roomId }, event: 'room_news', data: { n: 1 } })).status, 202);
    assert.equal((await api('POST', '/publish', { target: { tenantId: tB, roomId }, event: 'room_news', data: { n: 2 } })).status, 202);
    // Assert
    assert.deepEqual(await inA.inbox.next('room_news'), { n: 1 });
    assert.deepEqual(await inB.inbox.next('room_news'), { n: 2 });
    assert.deepEqual(inA.inbox.all('room_news'), [{ n: 1 }]);
  });

  test('a broadcast to everyone reaches tenant-less and tenant users alike', async () => {
    // Arrange
    const a = await server.connect(server.token());
    const b = await server.connect(server.token({ tenantId: uid('t') }));
    const event = uid('evt').replace(/-/g, '_');
    // Act
    const res = await api('POST', '/publish', { target: { all: true }, event, data: 'hello all' });
    // Assert
    assert.equal(res.status, 202, res.body);
    assert.equal(await a.inbox.next(event), 'hello all');
    assert.equal(await b.inbox.next(event), 'hello all');
  });

  test('a chat message posted over HTTP reaches the room as chat_message and continues the room seq', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const socket = await server.connect(server.token({ tenantId }));
    await joinRoom(socket, roomId);
    const before = await chat(socket, roomId, 'from socket');
    // Act
    const res = await api('POST', `/rooms/${roomId}/messages`, { tenantId, userId: 'bot', message: 'from bot' });
    // Assert
    assert.equal(res.status, 201, res.body);
    const m = await socket.inbox.next('chat_message', (x) => x.message === 'from bot');
    assert.deepEqual(m, res.json);
    assert.equal(m.userName, 'bot');
    assert.ok(m.seq > before.seq);
  });
});
