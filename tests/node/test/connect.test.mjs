// PROTOCOL.md §3 (on connect: `connected`, presence) and the §11 presence details.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { RFC3339_UTC, disconnected, openRawWebSocket, sendMessage, startServer, uid, withTimeout } from './helpers.mjs';

let server;
before(async () => {
  server = await startServer();
});
afterEach(() => server.closeClients());
after(() => server.stop());

/** Waits until `observer` got `user_status` `status` for `userId`. */
const statusOf = (observer, userId, status) =>
  observer.inbox.next('user_status', (d) => d.userId === userId && d.status === status);

describe('connected event', () => {
  test('the server emits connected with the message, the user id and the socket id', async () => {
    // Arrange
    const sub = uid('u');
    // Act
    const socket = await server.connect(server.token({ sub, tenantId: uid('t') }));
    // Assert
    assert.deepEqual(socket.connectedPayload, {
      message: 'Connected to WebSocket server',
      userId: sub,
      connectionId: socket.id,
    });
  });

  test('connected also arrives over polling with connectionId equal to the socket id', async () => {
    // Arrange
    const sub = uid('u');
    // Act
    const socket = await server.connect(server.token({ sub }), { transports: ['polling'] });
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
    assert.equal(socket.connectedPayload.connectionId, socket.id);
  });

  test('two connections of one user get distinct connection ids', async () => {
    // Arrange
    const token = server.token();
    // Act
    const [a, b] = await Promise.all([server.connect(token), server.connect(token)]);
    // Assert
    assert.notEqual(a.connectedPayload.connectionId, b.connectedPayload.connectionId);
  });

  test('the socket is in its own user room: a user_status without tenant reaches its other connection', async () => {
    // Arrange: no tenant, so user_status goes to the user's own connections (§11)
    const token = server.token();
    const a = await server.connect(token);
    const b = await server.connect(token);
    // Act
    const res = await sendMessage(a, 'user_status', { status: 'busy' });
    // Assert
    assert.equal(res.ok, true);
    const got = await b.inbox.next('user_status', (d) => d.status === 'busy');
    assert.equal(got.userId, a.connectedPayload.userId);
  });
  test('when connected arrives the socket is already in its tenant room', async () => {
    // Arrange
    const tenantId = uid('t');
    const member = await server.connect(server.token({ tenantId }));
    // Act: the newcomer is told it is connected, then a member changes status right away
    const newcomer = await server.connect(server.token({ tenantId }));
    assert.equal((await sendMessage(member, 'user_status', { status: 'busy' })).ok, true);
    // Assert: the member's own `online` may come first (presence is announced per tick), but
    // the status set after the newcomer's `connected` reaches it.
    const got = await newcomer.inbox.next(
      'user_status',
      (d) => d.userId === member.connectedPayload.userId && d.status === 'busy',
    );
    assert.match(got.timestamp, RFC3339_UTC);
  });
});

describe('events right after the CONNECT ack', () => {
  test('an event sent the instant the CONNECT ack arrives is handled, on every one of many sockets', async () => {
    // Arrange: raw sockets, so nothing sits between the ack and the event (the official client
    // goes through its event loop first). The server's connect handler runs in a task of its
    // own after the ack; the event handlers must not depend on it having run.
    const { default: WebSocket } = await import('ws');
    const base = `${server.url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`;
    const one = (i) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(base);
        const room = `burst-${i}`;
        ws.on('error', reject);
        ws.on('message', (data) => {
          const text = data.toString();
          if (text.startsWith('0')) ws.send(`40/ws,${JSON.stringify({ token: server.token() })}`);
          else if (text.startsWith('40/ws,')) ws.send(`42/ws,${JSON.stringify(['join_room', { roomId: room }])}`);
          else if (text.startsWith('42/ws,["joined_room"')) {
            resolve(JSON.parse(text.slice(6))[1].roomId);
            ws.close();
          }
        });
      });
    // Act
    const rooms = await withTimeout(Promise.all(Array.from({ length: 100 }, (_, i) => one(i))), 15000, 'every joined_room');
    // Assert
    assert.deepEqual(rooms, Array.from({ length: 100 }, (_, i) => `burst-${i}`));
  });
});

describe('presence', () => {
  test('a user first connection sends user_status online to the tenant members', async () => {
    // Arrange
    const tenantId = uid('t');
    const observer = await server.connect(server.token({ tenantId }));
    const sub = uid('u');
    // Act
    await server.connect(server.token({ sub, tenantId }));
    // Assert
    const status = await statusOf(observer, sub, 'online');
    assert.deepEqual(Object.keys(status).sort(), ['status', 'timestamp', 'userId']);
    assert.match(status.timestamp, RFC3339_UTC);
  });

  test('presence does not reach members of another tenant', async () => {
    // Arrange
    const [tA, tB] = [uid('tA'), uid('tB')];
    const outsider = await server.connect(server.token({ tenantId: tB }));
    const sub = uid('u');
    // Act
    await server.connect(server.token({ sub, tenantId: tA }));
    // Barrier: a tenant-B delivery published after the tenant-A announcement.
    const bUser = await server.connect(server.token({ tenantId: tB }));
    await statusOf(outsider, bUser.connectedPayload.userId, 'online');
    // Assert
    assert.deepEqual(outsider.inbox.all('user_status', (d) => d.userId === sub), []);
  });

  test('a second connection of an online user sends no second online', async () => {
    // Arrange
    const tenantId = uid('t');
    const observer = await server.connect(server.token({ tenantId }));
    const sub = uid('u');
    const token = server.token({ sub, tenantId });
    const first = await server.connect(token);
    await statusOf(observer, sub, 'online');
    // Act
    const second = await server.connect(token);
    const barrier = await sendMessage(second, 'user_status', { status: 'away' });
    assert.equal(barrier.ok, true);
    await statusOf(observer, sub, 'away');
    // Assert
    assert.deepEqual(
      observer.inbox.all('user_status', (d) => d.userId === sub).map((d) => d.status),
      ['online', 'away'],
    );
    first.close();
    second.close();
  });

  test('offline is sent only when the last connection of the user closes', async () => {
    // Arrange
    const tenantId = uid('t');
    const observer = await server.connect(server.token({ tenantId }));
    const sub = uid('u');
    const token = server.token({ sub, tenantId });
    const first = await server.connect(token);
    const second = await server.connect(token);
    await statusOf(observer, sub, 'online');
    // Act 1: one of two connections closes
    first.close();
    // Barrier: a new connection's handshake and round trip take far longer than the server needs
    // to handle the close; its status change is published after any (wrong) offline.
    const third = await server.connect(token);
    assert.equal((await sendMessage(third, 'user_status', { status: 'busy' })).ok, true);
    await statusOf(observer, sub, 'busy');
    // Assert 1
    assert.deepEqual(observer.inbox.all('user_status', (d) => d.userId === sub && d.status === 'offline'), []);
    // Act 2: the remaining connections close
    second.close();
    third.close();
    // Assert 2
    const offline = await statusOf(observer, sub, 'offline');
    assert.match(offline.timestamp, RFC3339_UTC);
    assert.deepEqual(
      observer.inbox.all('user_status', (d) => d.userId === sub).map((d) => d.status),
      ['online', 'busy', 'offline'],
    );
  });

  test('a server-side disconnect of the last connection also sends offline', async () => {
    // Arrange: leave_room of the own user room is refused, so use an event that ends the socket:
    // an oversized websocket frame closes it on the server side.
    const tenantId = uid('t');
    const observer = await server.connect(server.token({ tenantId }));
    const sub = uid('u');
    const socket = await server.connect(server.token({ sub, tenantId }));
    await statusOf(observer, sub, 'online');
    // Act
    socket.emit('message', { type: 'x', data: 'y'.repeat(70 * 1024) });
    await disconnected(socket);
    // Assert
    await statusOf(observer, sub, 'offline');
  });

  test('users without a tenant have no presence broadcast', async () => {
    // Arrange: two tenant-less users
    const observer = await server.connect(server.token());
    const sub = uid('u');
    // Act
    const lonely = await server.connect(server.token({ sub }));
    lonely.close();
    // Barrier: a fresh tenant-less user connects and sets a status; the observer's own
    // status change reaches the observer after anything published before it.
    assert.equal((await sendMessage(observer, 'user_status', { status: 'away' })).ok, true);
    await statusOf(observer, observer.connectedPayload.userId, 'away');
    // Assert
    assert.deepEqual(observer.inbox.all('user_status', (d) => d.userId === sub), []);
  });

  test('a tenant-less user_status goes to the user own connections only', async () => {
    // Arrange
    const observer = await server.connect(server.token());
    const token = server.token();
    const a = await server.connect(token);
    const b = await server.connect(token);
    const userId = a.connectedPayload.userId;
    // Act
    assert.equal((await sendMessage(a, 'user_status', { status: 'busy' })).ok, true);
    // Assert
    const got = await b.inbox.next('user_status', (d) => d.userId === userId);
    assert.equal(got.status, 'busy');
    assert.match(got.timestamp, RFC3339_UTC);
    assert.equal((await sendMessage(observer, 'user_status', { status: 'away' })).ok, true);
    await statusOf(observer, observer.connectedPayload.userId, 'away');
    assert.deepEqual(observer.inbox.all('user_status', (d) => d.userId === userId), []);
  });
});

describe('presence of connections closed during CONNECT', () => {
  test('after a transport closed right after CONNECT, the user next connection announces online again', { timeout: 30000 }, async () => {
    // Arrange: each user sends CONNECT and closes its transport at once
    const tenantId = uid('t');
    const observer = await server.connect(server.token({ tenantId }));
    const users = Array.from({ length: 40 }, () => uid('hasty'));
    await Promise.all(
      users.map(async (sub) => {
        const raw = await openRawWebSocket(server.url);
        raw.ws.send(`40/ws,${JSON.stringify({ token: server.token({ sub, tenantId }) })}`);
        raw.ws.close();
        await withTimeout(raw.closed, 5000, 'the close handshake');
      }),
    );
    const barrier1 = await server.connect(server.token({ tenantId }));
    await statusOf(observer, barrier1.connectedPayload.userId, 'online');
    const mark = observer.inbox.events.length;
    // Act: every user now connects for real (its only live connection)
    await Promise.all(users.map((sub) => server.connect(server.token({ sub, tenantId }))));
    const barrier2 = await server.connect(server.token({ tenantId }));
    await statusOf(observer, barrier2.connectedPayload.userId, 'online');
    // Assert
    const announced = new Set(
      observer.inbox.events.slice(mark).filter((e) => e.event === 'user_status' && e.data.status === 'online').map((e) => e.data.userId),
    );
    const silent = users.filter((sub) => !announced.has(sub));
    assert.deepEqual(silent, [], `${silent.length} of ${users.length} users came online without user_status online`);
  });
});
