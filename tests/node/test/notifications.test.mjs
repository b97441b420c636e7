// PROTOCOL.md §5 `mark_notification_read`, §6 `notification` / `notification_read`, with
// notifications created through the HTTP API (§7 `POST /api/v1/notifications`).

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { RFC3339_UTC, expectFailure, request, sendMessage, startServer, uid } from './helpers.mjs';

const API_KEY = 'test-api-key-0123456789';
let server;
before(async () => {
  server = await startServer({ API_KEYS: API_KEY });
});
afterEach(() => server.closeClients());
after(() => server.stop());

/** POST /api/v1/notifications with the API key; asserts 201 and resolves with the stored one. */
async function createNotification(body) {
  const res = await request(`${server.url}/api/v1/notifications`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${API_KEY}` },
    body,
  });
  assert.equal(res.status, 201, `POST /api/v1/notifications: ${res.status} ${res.body}`);
  return res.json;
}

const markRead = (socket, notificationId) => sendMessage(socket, 'mark_notification_read', { notificationId });

/** Two connections of one fresh user (tenant `tenantId`), plus the user id. */
async function userWithTwoConnections(tenantId = uid('t')) {
  const token = server.token({ tenantId });
  const a = await server.connect(token);
  const b = await server.connect(token);
  return { a, b, userId: a.connectedPayload.userId, tenantId };
}

describe('mark_notification_read errors', () => {
  test('marking an unknown notification id is refused with NOT_FOUND', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    // Act + Assert
    await expectFailure(socket, 'message', { type: 'mark_notification_read', data: { notificationId: uid('nope') } }, 'NOT_FOUND');
  });

  for (const [what, data] of [
    ['a number notificationId', { notificationId: 7 }],
    ['a missing notificationId', {}],
    ['data that is a string', 'n-1'],
  ]) {
    test(`mark_notification_read with ${what} is refused with INVALID_PAYLOAD`, async () => {
      // Arrange
      const socket = await server.connect(server.token());
      // Act + Assert
      await expectFailure(socket, 'message', { type: 'mark_notification_read', data }, 'INVALID_PAYLOAD');
    });
  }
});

describe('notifications', () => {
  test('POST /api/v1/notifications answers 201 with the stored notification', async () => {
    // Arrange
    const userId = uid('u');
    const tenantId = uid('t');
    // Act
    const n = await createNotification({ userId, tenantId, title: 'Hi', message: 'Body', type: 'info' });
    // Assert
    assert.deepEqual(Object.keys(n).sort(), ['id', 'message', 'readAt', 'tenantId', 'timestamp', 'title', 'type', 'userId']);
    assert.equal(typeof n.id, 'string');
    assert.deepEqual(
      { userId: n.userId, tenantId: n.tenantId, title: n.title, message: n.message, type: n.type, readAt: n.readAt },
      { userId, tenantId, title: 'Hi', message: 'Body', type: 'info', readAt: null },
    );
    assert.match(n.timestamp, RFC3339_UTC);
  });

  test('a created notification is delivered live as notification { id, title, message, type, timestamp } to every connection of the user', async () => {
    // Arrange
    const { a, b, userId, tenantId } = await userWithTwoConnections();
    // Act
    const n = await createNotification({ userId, tenantId, title: 'Deploy', message: 'v2 is live', type: 'success' });
    // Assert
    for (const socket of [a, b]) {
      const got = await socket.inbox.next('notification', (x) => x.id === n.id);
      assert.deepEqual(got, { id: n.id, title: 'Deploy', message: 'v2 is live', type: 'success', timestamp: n.timestamp });
    }
  });

  test('a notification without tenantId reaches a tenant-less user', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    const userId = socket.connectedPayload.userId;
    // Act
    const n = await createNotification({ userId, title: 'T', message: 'M', type: 'info' });
    // Assert
    assert.equal(n.tenantId, null);
    assert.equal((await socket.inbox.next('notification')).id, n.id);
  });

  test('a notification reaches only its user', async () => {
    // Arrange
    const tenantId = uid('t');
    const { userId } = await userWithTwoConnections(tenantId);
    const other = await server.connect(server.token({ tenantId }));
    // Act
    await createNotification({ userId, tenantId, title: 'Private', message: 'for one user', type: 'info' });
    const mine = await createNotification({ userId: other.connectedPayload.userId, tenantId, title: 'B', message: 'barrier', type: 'info' });
    // Assert
    await other.inbox.next('notification', (x) => x.id === mine.id);
    assert.deepEqual(other.inbox.all('notification').map((x) => x.title), ['B']);
  });

  test('mark_notification_read of the own notification sends notification_read { notificationId } to every connection of the user', async () => {
    // Arrange
    const { a, b, userId, tenantId } = await userWithTwoConnections();
    const n = await createNotification({ userId, tenantId, title: 'Read me', message: 'x', type: 'info' });
    // Act
    const res = await markRead(a, n.id);
    // Assert
    assert.equal(res.ok, true, JSON.stringify(res));
    for (const socket of [a, b]) {
      assert.deepEqual(await socket.inbox.next('notification_read'), { notificationId: n.id });
    }
  });

  test('a marked notification is stored as read', async () => {
    // Arrange
    const { a, userId, tenantId } = await userWithTwoConnections();
    const n = await createNotification({ userId, tenantId, title: 'Stored', message: 'x', type: 'info' });
    // Act
    assert.equal((await markRead(a, n.id)).ok, true);
    // Assert
    const res = await request(`${server.url}/api/v1/users/${encodeURIComponent(userId)}/notifications?unread=true`, {
      headers: { Authorization: `Bearer ${API_KEY}` },
    });
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(res.json.notifications.filter((x) => x.id === n.id), []);
  });

  test('another user marking the notification gets NOT_FOUND and the owner hears nothing', async () => {
    // Arrange
    const tenantId = uid('t');
    const { a, userId } = await userWithTwoConnections(tenantId);
    const n = await createNotification({ userId, tenantId, title: 'Not yours', message: 'x', type: 'info' });
    const intruder = await server.connect(server.token({ tenantId }));
    // Act
    await expectFailure(intruder, 'message', { type: 'mark_notification_read', data: { notificationId: n.id } }, 'NOT_FOUND');
    // Assert: the owner's own mark is the barrier; exactly one notification_read arrives
    assert.equal((await markRead(a, n.id)).ok, true);
    await a.inbox.next('notification_read');
    assert.equal(a.inbox.all('notification_read').length, 1);
    assert.deepEqual(intruder.inbox.all('notification_read'), []);
  });
});

describe('tenant-carrying notifications (§11: what carries a tenant stays in it)', () => {
  /** One user (one `sub`) connected in two tenants. */
  async function userInTwoTenants() {
    const sub = uid('u');
    const [ta, tb] = [uid('ta'), uid('tb')];
    const a = await server.connect(server.token({ sub, tenantId: ta }));
    const b = await server.connect(server.token({ sub, tenantId: tb }));
    return { sub, ta, tb, a, b };
  }

  test('a notification with tenantId T reaches only the user\'s connections of tenant T', async () => {
    // Arrange
    const { sub, ta, a, b } = await userInTwoTenants();
    // Act
    const n = await createNotification({ userId: sub, tenantId: ta, title: 'For A', message: 'x', type: 'info' });
    const barrier = await createNotification({ userId: sub, title: 'Everyone', message: 'x', type: 'info' });
    // Assert
    await a.inbox.next('notification', (x) => x.id === n.id);
    await a.inbox.next('notification', (x) => x.id === barrier.id);
    await b.inbox.next('notification', (x) => x.id === barrier.id);
    assert.deepEqual(b.inbox.all('notification').map((x) => x.title), ['Everyone']);
  });

  test('a notification of tenant T cannot be marked read from another tenant (NOT_FOUND) and stays unread', async () => {
    // Arrange
    const { sub, ta, a, b } = await userInTwoTenants();
    const n = await createNotification({ userId: sub, tenantId: ta, title: 'For A', message: 'x', type: 'info' });
    await a.inbox.next('notification', (x) => x.id === n.id);
    // Act
    await expectFailure(b, 'message', { type: 'mark_notification_read', data: { notificationId: n.id } }, 'NOT_FOUND');
    // Assert
    const res = await request(`${server.url}/api/v1/users/${encodeURIComponent(sub)}/notifications?unread=true`, {
      headers: { Authorization: `Bearer ${API_KEY}` },
    });
    assert.deepEqual(res.json.notifications.map((x) => x.id), [n.id]);
  });

  test('a tenant-less connection cannot mark a notification of tenant T read either', async () => {
    // Arrange
    const { sub, ta } = await userInTwoTenants();
    const plain = await server.connect(server.token({ sub }));
    const n = await createNotification({ userId: sub, tenantId: ta, title: 'For A', message: 'x', type: 'info' });
    // Act + Assert
    await expectFailure(plain, 'message', { type: 'mark_notification_read', data: { notificationId: n.id } }, 'NOT_FOUND');
  });

  test('marked from tenant T, notification_read goes to the connections of T only', async () => {
    // Arrange
    const { sub, ta, a, b } = await userInTwoTenants();
    const n = await createNotification({ userId: sub, tenantId: ta, title: 'For A', message: 'x', type: 'info' });
    const everyone = await createNotification({ userId: sub, title: 'Everyone', message: 'x', type: 'info' });
    // Act
    assert.equal((await markRead(a, n.id)).ok, true);
    assert.equal((await markRead(a, everyone.id)).ok, true);
    // Assert: the tenant-less one is read everywhere, and is the barrier for b
    await a.inbox.next('notification_read', (x) => x.notificationId === n.id);
    await b.inbox.next('notification_read', (x) => x.notificationId === everyone.id);
    assert.deepEqual(b.inbox.all('notification_read'), [{ notificationId: everyone.id }]);
  });

  test('a notification without tenantId can be marked read from any tenant of the user', async () => {
    // Arrange
    const { sub, a, b } = await userInTwoTenants();
    const n = await createNotification({ userId: sub, title: 'Everyone', message: 'x', type: 'info' });
    // Act
    assert.equal((await markRead(b, n.id)).ok, true);
    // Assert
    for (const s of [a, b]) assert.deepEqual(await s.inbox.next('notification_read'), { notificationId: n.id });
  });
});

describe('what the store cannot hold', () => {
  for (const field of ['title', 'message', 'type']) {
    test(`POST /api/v1/notifications with a NUL in ${field} is 400, not 503`, async () => {
      // Arrange
      const body = { userId: uid('u'), title: 'T', message: 'M', type: 'info', [field]: 'a\u0000b' };
      // Act
      const res = await request(`${server.url}/api/v1/notifications`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${API_KEY}` },
        body,
      });
      // Assert
      assert.equal(res.status, 400, res.body);
    });
  }

  test('POST /api/v1/rooms/{roomId}/messages with a NUL in the message is 400', async () => {
    // Act
    const res = await request(`${server.url}/api/v1/rooms/${uid('room')}/messages`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${API_KEY}` },
      body: { userId: uid('u'), message: 'a\u0000b' },
    });
    // Assert
    assert.equal(res.status, 400, res.body);
  });

  test('POST /api/v1/notifications with a NUL in userId is 400', async () => {
    // Act
    const res = await request(`${server.url}/api/v1/notifications`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${API_KEY}` },
      body: { userId: 'a\u0000b', title: 'T', message: 'M', type: 'info' },
    });
    // Assert
    assert.equal(res.status, 400, res.body);
  });
});
