// The HTTP API (PROTOCOL.md §7) through a real HTTP client against the real server.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { RFC3339_UTC, chat, joinRoom, request, startServer, uid } from './helpers.mjs';

const KEY = 'api-key-one-0123456789';
const OTHER_KEY = 'api-key-two-9876543210';

describe('HTTP API', () => {
  let server;
  const api = (path, { key = KEY, ...opts } = {}) =>
    request(`${server.url}/api/v1${path}`, {
      ...opts,
      headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(opts.headers ?? {}) },
    });

  before(async () => {
    server = await startServer({ API_KEYS: `${KEY},${OTHER_KEY}` });
  });
  after(() => server.stop());

  test('a missing or wrong API key gets 401 in the error shape; every configured key works', async () => {
    for (const key of [null, 'wrong-key']) {
      const res = await api('/stats', { key });
      assert.equal(res.status, 401);
      assert.equal(res.json.error.code, 'UNAUTHORIZED');
      assert.equal(typeof res.json.error.message, 'string');
    }
    assert.equal((await api('/stats', { key: KEY })).status, 200);
    assert.equal((await api('/stats', { key: OTHER_KEY })).status, 200);
  });

  test('the OpenAPI document needs no key and lists exactly the routes that exist', async () => {
    const res = await api('/openapi.json', { key: null });
    assert.equal(res.status, 200);
    const doc = res.json;
    assert.match(doc.openapi, /^3\./);
    const documented = Object.entries(doc.paths)
      .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
      .sort();
    assert.deepEqual(documented, [
      'DELETE /rooms/{roomId}/members/{userId}',
      'GET /presence',
      'GET /rooms/{roomId}/messages',
      'GET /stats',
      'GET /users/{userId}/notifications',
      'POST /notifications',
      'POST /publish',
      'POST /rooms/{roomId}/messages',
      'POST /users/{userId}/disconnect',
      'PUT /rooms/{roomId}/members/{userId}',
    ]);
    // Every documented operation is served (an unknown route answers "No such endpoint").
    for (const op of documented) {
      const [method, path] = op.split(' ');
      const concrete = path.replace('{roomId}', 'private:probe').replace('{userId}', 'probe-user');
      const r = await api(concrete, { method, body: method === 'POST' ? {} : undefined });
      assert.notEqual(r.json?.error?.message, 'No such endpoint', op);
      assert.notEqual(r.status, 405, op);
    }
    assert.equal((await api('/no/such/route')).json.error.message, 'No such endpoint');
  });

  test('malformed JSON and wrong shapes are 400 INVALID_PAYLOAD', async () => {
    const bad = await api('/notifications', { method: 'POST', body: '{not json' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, 'INVALID_PAYLOAD');
    const shape = await api('/notifications', { method: 'POST', body: { userId: 5, title: 't', message: 'm', type: 'x' } });
    assert.equal(shape.status, 400);
    assert.equal(shape.json.error.code, 'INVALID_PAYLOAD');
    const empty = await api('/notifications', { method: 'POST', body: { userId: 'u', title: '', message: 'm', type: 'x' } });
    assert.equal(empty.status, 400);
  });

  test('publish reaches a user, a tenant, a tenant-scoped room and everyone', async () => {
    const tenant = uid('t');
    const other = uid('t');
    const u = uid('u');
    const a = await server.connect(server.token({ sub: u, tenantId: tenant }));
    const b = await server.connect(server.token({ tenantId: other }));
    await joinRoom(a, 'lobby');
    await joinRoom(b, 'lobby');

    const post = (target, event, data) => api('/publish', { method: 'POST', body: { target, event, data } });
    assert.equal((await post({ userId: u }, 'order_updated', { id: 1 })).status, 202);
    assert.deepEqual(await a.inbox.next('order_updated'), { id: 1 });
    assert.equal((await post({ tenantId: tenant }, 'tenant_news', { n: 2 })).status, 202);
    assert.deepEqual(await a.inbox.next('tenant_news'), { n: 2 });
    assert.equal((await post({ tenantId: other, roomId: 'lobby' }, 'room_news', { n: 3 })).status, 202);
    assert.deepEqual(await b.inbox.next('room_news'), { n: 3 });
    const noData = await api('/publish', { method: 'POST', body: { target: { all: true }, event: 'everyone' } });
    assert.equal(noData.status, 202);
    assert.equal(await a.inbox.next('everyone'), null);
    assert.equal(await b.inbox.next('everyone'), null);
    // Scoping: the room message of tenant `other` never reached tenant `tenant`; the tenant
    // message never reached the other tenant.
    assert.equal(a.inbox.all('room_news').length, 0);
    assert.equal(b.inbox.all('tenant_news').length, 0);
    assert.equal(b.inbox.all('order_updated').length, 0);
  });

  test('publish refuses reserved and gateway-owned event names and mixed targets', async () => {
    for (const event of ['connect', 'disconnect', 'chat_message', 'error', 'connected', 'joined_room', 'notification_read', 'token_refreshed', 'left_room']) {
      const r = await api('/publish', { method: 'POST', body: { target: { all: true }, event, data: {} } });
      assert.equal(r.status, 400, event);
      assert.equal(r.json.error.code, 'INVALID_PAYLOAD');
    }
    for (const target of [{ userId: 'u', tenantId: 't' }, { all: false }, {}, { userId: 'u', all: true }, 'u']) {
      const r = await api('/publish', { method: 'POST', body: { target, event: 'x', data: 1 } });
      assert.equal(r.status, 400, JSON.stringify(target));
    }
  });

  test('a created notification is stored, delivered live, listed newest first and marked read', async () => {
    const u = uid('u');
    const s1 = await server.connect(server.token({ sub: u }));
    const s2 = await server.connect(server.token({ sub: u }));
    const created = [];
    for (const title of ['first', 'second']) {
      const r = await api('/notifications', { method: 'POST', body: { userId: u, title, message: 'hello', type: 'info' } });
      assert.equal(r.status, 201);
      created.push(r.json);
    }
    const n = created[1];
    assert.deepEqual(Object.keys(n).sort(), ['id', 'message', 'readAt', 'tenantId', 'timestamp', 'title', 'type', 'userId']);
    assert.equal(n.userId, u);
    assert.equal(n.readAt, null);
    assert.match(n.timestamp, RFC3339_UTC);
    const live = await s1.inbox.next('notification', (x) => x.id === n.id);
    assert.deepEqual(live, { id: n.id, title: 'second', message: 'hello', type: 'info', timestamp: n.timestamp });
    await s2.inbox.next('notification', (x) => x.id === n.id);

    const list = await api(`/users/${u}/notifications`);
    assert.deepEqual(list.json.notifications.map((x) => x.title), ['second', 'first']);
    assert.equal((await api(`/users/${u}/notifications?limit=1`)).json.notifications.length, 1);
    assert.equal((await api(`/users/${u}/notifications?limit=0`)).status, 400);

    const ackRes = await s1.timeout(5000).emitWithAck('message', { type: 'mark_notification_read', data: { notificationId: created[0].id } });
    assert.equal(ackRes.ok, true);
    assert.deepEqual(await s2.inbox.next('notification_read'), { notificationId: created[0].id });
    const unread = await api(`/users/${u}/notifications?unread=true`);
    assert.deepEqual(unread.json.notifications.map((x) => x.id), [n.id]);
  });

  test('a backend message is stored and delivered like send_message; history pages backwards', async () => {
    const tenant = uid('t');
    const room = uid('room');
    const member = await server.connect(server.token({ tenantId: tenant }));
    await joinRoom(member, room);
    const r = await api(`/rooms/${room}/messages`, { method: 'POST', body: { tenantId: tenant, userId: 'bot', message: 'from the backend' } });
    assert.equal(r.status, 201);
    assert.equal(r.json.userName, 'bot', 'userName defaults to userId');
    assert.equal(r.json.seq, 1);
    assert.deepEqual(await member.inbox.next('chat_message'), r.json);
    for (let i = 2; i <= 5; i++) await chat(member, room, `m${i}`);

    const page1 = await api(`/rooms/${room}/messages?tenantId=${tenant}&limit=2`);
    assert.deepEqual(page1.json.messages.map((m) => m.seq), [4, 5]);
    assert.equal(page1.json.nextBefore, 4);
    const page2 = await api(`/rooms/${room}/messages?tenantId=${tenant}&limit=2&before=4`);
    assert.deepEqual(page2.json.messages.map((m) => m.seq), [2, 3]);
    const page3 = await api(`/rooms/${room}/messages?tenantId=${tenant}&limit=2&before=2`);
    assert.deepEqual(page3.json.messages.map((m) => m.seq), [1]);
    assert.equal(page3.json.nextBefore, null);
    // Other tenant, same room name: nothing.
    assert.deepEqual((await api(`/rooms/${room}/messages?tenantId=${uid('t')}`)).json.messages, []);
    // Reserved rooms are refused; private rooms are allowed to the trusted caller.
    assert.equal((await api('/rooms/user:x/messages', { method: 'POST', body: { userId: 'bot', message: 'x' } })).status, 400);
    assert.equal((await api(`/rooms/private:${room}/messages`, { method: 'POST', body: { userId: 'bot', message: 'x' } })).status, 201);
    assert.equal((await api('/rooms/bad room/messages')).status, 400);
  });

  test('a grant lets a user join a private room; a revoke makes its sockets leave at once', async () => {
    const tenant = uid('t');
    const u = uid('u');
    const room = `private:${uid('r')}`;
    const s = await server.connect(server.token({ sub: u, tenantId: tenant }));
    const denied = await s.timeout(5000).emitWithAck('join_room', { roomId: room });
    assert.equal(denied.error.code, 'ACCESS_DENIED');

    const g = await api(`/rooms/${room}/members/${u}?tenantId=${tenant}`, { method: 'PUT' });
    assert.equal(g.status, 200);
    assert.deepEqual(g.json, { granted: true, created: true });
    assert.equal((await api(`/rooms/${room}/members/${u}?tenantId=${tenant}`, { method: 'PUT' })).json.created, false);
    await joinRoom(s, room);
    // A member through its token keeps the room when the grant goes.
    const claimed = await server.connect(server.token({ sub: uid('u'), tenantId: tenant, rooms: [room] }));
    await joinRoom(claimed, room);

    const d = await api(`/rooms/${room}/members/${u}?tenantId=${tenant}`, { method: 'DELETE' });
    assert.deepEqual(d.json, { revoked: true });
    assert.deepEqual(await s.inbox.next('left_room'), { roomId: room });
    await chat(claimed, room, 'after revoke');
    await claimed.inbox.next('chat_message', (m) => m.message === 'after revoke');
    assert.equal(s.inbox.all('chat_message', (m) => m.message === 'after revoke').length, 0);
    assert.equal(claimed.inbox.all('left_room').length, 0);
    assert.equal((await api(`/rooms/open-room/members/${u}`, { method: 'PUT' })).status, 400, 'only private rooms have members');
  });

  test('disconnect closes every connection of the user and says how many', async () => {
    const u = uid('u');
    const s1 = await server.connect(server.token({ sub: u }));
    const s2 = await server.connect(server.token({ sub: u }));
    const bystander = await server.connect(server.token({}));
    const r = await api(`/users/${u}/disconnect`, { method: 'POST' });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { disconnected: 2 });
    assert.equal(await s1.inbox.next('disconnect'), 'io server disconnect');
    assert.equal(await s2.inbox.next('disconnect'), 'io server disconnect');
    assert.equal(bystander.connected, true);
  });

  test('stats count connections per user and tenant', async () => {
    const tenant = uid('t');
    const u = uid('u');
    await server.connect(server.token({ sub: u, tenantId: tenant }));
    await server.connect(server.token({ sub: u, tenantId: tenant }));
    const s = (await api('/stats')).json;
    assert.equal(s.users[u], 2);
    assert.equal(s.tenants[tenant], 2);
    assert.ok(s.totalConnections >= 2);
    assert.equal(s.nodes.length, 1);
    assert.equal(s.nodes[0].connections, s.totalConnections);
  });
});

describe('HTTP API without keys', () => {
  test('is off: every route, the OpenAPI document included, is 404', async () => {
    const server = await startServer({});
    try {
      for (const path of ['/api/v1/stats', '/api/v1/openapi.json', '/api/v1/publish']) {
        const r = await request(`${server.url}${path}`, { headers: { authorization: 'Bearer anything' } });
        assert.equal(r.status, 404, path);
      }
    } finally {
      await server.stop();
    }
  });
});
