// Limits that end sockets or refuse them: inactivity (§5), the per-user connection cap, the
// websocket frame size (§1), binary attachments, the CONNECT deadline and the HTTP header deadline.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import {
  ack,
  chat,
  disconnected,
  joinRoom,
  openRawWebSocket,
  sendMessage,
  startServer,
  uid,
  withTimeout,
} from './helpers.mjs';

const MAX_CONNECTIONS = 2;
const MAX_PAYLOAD = 4096;
let limits;
let idle; // INACTIVE_TIMEOUT_SECS=2 with frequent pings
before(async () => {
  [limits, idle] = await Promise.all([
    startServer({
      MAX_CONNECTIONS_PER_USER: MAX_CONNECTIONS,
      MAX_PAYLOAD_BYTES: MAX_PAYLOAD,
      MAX_BINARY_ATTACHMENTS: 2,
      CONNECT_TIMEOUT_SECS: 1,
      HANDSHAKE_TIMEOUT_SECS: 1,
    }),
    startServer({ INACTIVE_TIMEOUT_SECS: 2, PING_INTERVAL_MS: 300, PING_TIMEOUT_MS: 2000 }),
  ]);
});
afterEach(() => {
  limits.closeClients();
  idle.closeClients();
});
after(() => Promise.all([limits.stop(), idle.stop()]));

/** Two users of one tenant in one room: `victim` gets the test's treatment, `peer` must not notice. */
async function victimAndPeer(srv, opts = {}) {
  const tenantId = uid('t');
  const roomId = uid('room');
  const victim = await srv.connect(srv.token({ tenantId }), opts);
  const peer = await srv.connect(srv.token({ tenantId }));
  await joinRoom(victim, roomId);
  await joinRoom(peer, roomId);
  return { victim, peer, roomId };
}

/** Asserts `socket` is still served: a chat round trip to the room. */
async function stillServed(socket, roomId) {
  const res = await chat(socket, roomId, 'alive');
  await socket.inbox.next('chat_message', (m) => m.id === res.id);
  assert.equal(socket.connected, true);
}

describe('inactivity', () => {
  test('a socket that sends no event for INACTIVE_TIMEOUT_SECS is disconnected with io server disconnect, pings notwithstanding', { timeout: 20000 }, async () => {
    // Arrange
    const socket = await idle.connect(idle.token());
    let pings = 0;
    socket.io.engine.on('ping', () => pings++);
    // Act
    const reason = await disconnected(socket, 10000);
    // Assert
    assert.equal(reason, 'io server disconnect');
    assert.ok(pings >= 2, `Engine.IO pings went on meanwhile (${pings})`);
  });

  test('an idle polling socket is disconnected the same way', { timeout: 20000 }, async () => {
    // Arrange
    const socket = await idle.connect(idle.token(), { transports: ['polling'] });
    // Act
    const reason = await disconnected(socket, 10000);
    // Assert
    assert.equal(reason, 'io server disconnect');
  });

  test('a socket that keeps sending events stays connected past the timeout', { timeout: 20000 }, async () => {
    // Arrange: the active socket connects first, so it has been there longer than the idle one
    const roomId = uid('room');
    const active = await idle.connect(idle.token());
    const keepAlive = setInterval(() => active.emit('join_room', { roomId }), 400);
    try {
      const sleeper = await idle.connect(idle.token());
      // Act: the idle socket's cut is the clock
      assert.equal(await disconnected(sleeper, 10000), 'io server disconnect');
      // Assert
      assert.equal(active.connected, true);
      assert.deepEqual(await ack(active, 'join_room', { roomId }), { ok: true, roomId });
      assert.deepEqual(active.inbox.all('disconnect'), []);
    } finally {
      clearInterval(keepAlive);
    }
  });
});

describe('connections per user', () => {
  test('the connection after MAX_CONNECTIONS_PER_USER is refused with "Too many connections"', async () => {
    // Arrange
    const token = limits.token();
    for (let i = 0; i < MAX_CONNECTIONS; i++) await limits.connect(token);
    // Act
    const err = await limits.refused(token);
    // Assert
    assert.equal(err.message, 'Too many connections');
  });

  test('the cap is per user: another user still connects', async () => {
    // Arrange
    const token = limits.token();
    for (let i = 0; i < MAX_CONNECTIONS; i++) await limits.connect(token);
    // Act
    const other = await limits.connect(limits.token());
    // Assert
    assert.equal(other.connected, true);
  });

  test('the cap counts connections over both transports', async () => {
    // Arrange
    const token = limits.token();
    await limits.connect(token, { transports: ['polling'] });
    await limits.connect(token);
    // Act
    const err = await limits.refused(token, { transports: ['polling'] });
    // Assert
    assert.equal(err.message, 'Too many connections');
  });

  test('after one connection closes, a new one is accepted', async () => {
    // Arrange
    const token = limits.token();
    const first = await limits.connect(token);
    await limits.connect(token);
    assert.equal((await limits.refused(token)).message, 'Too many connections');
    // Act
    first.close();
    // Assert: the server handles the close asynchronously; each attempt is a full round trip
    let accepted;
    for (let attempt = 0; attempt < 50 && !accepted; attempt++) {
      accepted = await limits.connect(token).catch((err) => {
        assert.equal(err.message, 'Too many connections');
        return undefined;
      });
    }
    assert.ok(accepted?.connected, 'a connection was accepted after one closed');
  });

  test('refused connections do not use up the cap', async () => {
    // Arrange
    const token = limits.token();
    const first = await limits.connect(token);
    const second = await limits.connect(token);
    for (let i = 0; i < 3; i++) await limits.refused(token);
    // Act
    first.close();
    second.close();
    // Assert: both slots come back
    const again = [];
    for (let attempt = 0; attempt < 100 && again.length < MAX_CONNECTIONS; attempt++) {
      const s = await limits.connect(token).catch(() => undefined);
      if (s) again.push(s);
    }
    assert.equal(again.length, MAX_CONNECTIONS);
  });
});

describe('websocket frame size', () => {
  test('a websocket frame above MAX_PAYLOAD_BYTES closes that socket only', async () => {
    // Arrange
    const { victim, peer, roomId } = await victimAndPeer(limits);
    // Act
    victim.emit('message', { type: 'send_message', data: { roomId, message: 'x'.repeat(MAX_PAYLOAD * 2) } });
    // Assert
    const reason = await disconnected(victim);
    assert.notEqual(reason, 'io client disconnect');
    assert.equal(victim.connected, false);
    await stillServed(peer, roomId);
  });

  test('a frame just under MAX_PAYLOAD_BYTES is accepted', async () => {
    // Arrange
    const { victim, peer, roomId } = await victimAndPeer(limits);
    const message = 'y'.repeat(MAX_PAYLOAD - 200);
    // Act
    const res = await sendMessage(victim, 'send_message', { roomId, message });
    // Assert
    assert.equal(res.ok, true, JSON.stringify(res));
    assert.equal((await peer.inbox.next('chat_message', (m) => m.id === res.id)).message.length, message.length);
    assert.equal(victim.connected, true);
  });

  test('over polling a payload above MAX_PAYLOAD_BYTES is accepted (polling keeps the 1 MB Engine.IO limit)', async () => {
    // Arrange
    const { victim, roomId } = await victimAndPeer(limits, { transports: ['polling'] });
    const blob = 'z'.repeat(MAX_PAYLOAD * 4);
    // Act
    const res = await sendMessage(victim, 'big-unknown-type', { blob });
    // Assert: handled (an unknown type), and the socket is still served
    assert.deepEqual(res, { ok: false, error: { code: 'UNKNOWN_EVENT', message: 'Unknown event type: big-unknown-type' } });
    await stillServed(victim, roomId);
  });
});

describe('binary attachments', () => {
  test('a packet with more binary attachments than MAX_BINARY_ATTACHMENTS closes that socket only', async () => {
    // Arrange
    const { victim, peer, roomId } = await victimAndPeer(limits);
    const bins = [1, 2, 3].map((i) => Buffer.from([i]));
    // Act
    victim.emit('message', { type: 'send_message', data: { roomId, message: 'bin', attachments: bins } });
    // Assert
    const reason = await disconnected(victim);
    assert.notEqual(reason, 'io client disconnect');
    await stillServed(peer, roomId);
  });

  test('a packet with MAX_BINARY_ATTACHMENTS attachments is handled and the socket stays up', async () => {
    // Arrange
    const { victim, roomId } = await victimAndPeer(limits);
    const bins = [1, 2].map((i) => Buffer.from([i]));
    // Act
    const res = await sendMessage(victim, 'binary-thing', { roomId, bins });
    // Assert: answered (an unknown type, or a shape the server cannot read as JSON), not fatal
    assert.equal(res.ok, false);
    assert.ok(['UNKNOWN_EVENT', 'INVALID_PAYLOAD'].includes(res.error.code), res.error.code);
    await stillServed(victim, roomId);
  });
});

describe('transport deadlines', () => {
  test('a transport that never sends CONNECT is closed after CONNECT_TIMEOUT_SECS', { timeout: 15000 }, async () => {
    // Arrange
    const silent = await openRawWebSocket(limits.url);
    const joined = await openRawWebSocket(limits.url);
    joined.ws.send(`40/ws,${JSON.stringify({ token: limits.token() })}`);
    await joined.next((m) => m.startsWith('40/ws,'));
    // Act
    const closed = await withTimeout(silent.closed, 8000, 'the silent transport to close');
    // Assert
    assert.ok(closed.code >= 1000, `close code ${closed.code}`);
    assert.equal(joined.ws.readyState, joined.ws.OPEN, 'a transport that did CONNECT stays open');
    joined.ws.send('42/ws,1["join_room",{"roomId":"still-open"}]');
    await joined.next((m) => m.startsWith('43/ws,1'));
    joined.ws.close();
  });

  test('a TCP client that sends partial HTTP headers is dropped after HANDSHAKE_TIMEOUT_SECS', { timeout: 15000 }, async () => {
    // Arrange
    const socket = net.connect(limits.port, '127.0.0.1');
    await withTimeout(new Promise((r) => socket.once('connect', r)), 5000, 'tcp connect');
    const closed = new Promise((r) => socket.once('close', r));
    socket.on('error', () => {});
    // Act
    socket.write('GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
    // Assert
    await withTimeout(closed, 8000, 'the server to drop the connection');
    assert.equal(socket.destroyed, true);
  });

  test('a TCP client that sends nothing is dropped after HANDSHAKE_TIMEOUT_SECS', { timeout: 15000 }, async () => {
    // Arrange
    const socket = net.connect(limits.port, '127.0.0.1');
    await withTimeout(new Promise((r) => socket.once('connect', r)), 5000, 'tcp connect');
    const closed = new Promise((r) => socket.once('close', r));
    socket.on('error', () => {});
    // Act: nothing is sent
    // Assert
    await withTimeout(closed, 8000, 'the server to drop the idle connection');
  });

  test('a complete HTTP request on a fresh connection is answered', async () => {
    // Arrange
    const socket = net.connect(limits.port, '127.0.0.1');
    const data = [];
    socket.on('data', (d) => data.push(d));
    await withTimeout(new Promise((r) => socket.once('connect', r)), 5000, 'tcp connect');
    // Act
    socket.write('GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    await withTimeout(new Promise((r) => socket.once('end', r)), 5000, 'the response');
    // Assert
    const text = Buffer.concat(data).toString();
    assert.match(text, /^HTTP\/1\.1 200/);
    assert.match(text, /"sid"/);
    socket.destroy();
  });
});

describe('connections closed during CONNECT', () => {
  test('a transport closed right after its CONNECT packet frees the user connection slot', { timeout: 30000 }, async () => {
    // Arrange: one connection per user, and many users whose transport closes right away
    const srv = await startServer({ MAX_CONNECTIONS_PER_USER: 1 });
    try {
      const users = Array.from({ length: 40 }, () => uid('hasty'));
      await Promise.all(
        users.map(async (sub) => {
          const raw = await openRawWebSocket(srv.url);
          raw.ws.send(`40/ws,${JSON.stringify({ token: srv.token({ sub, tenantId: 'hasty' }) })}`);
          raw.ws.close();
          await withTimeout(raw.closed, 5000, 'the close handshake');
        }),
      );
      // Act: each user connects normally (a few attempts: the server handles closes asynchronously)
      const refusedUsers = [];
      for (const sub of users) {
        let ok = false;
        for (let attempt = 0; attempt < 10 && !ok; attempt++) {
          ok = await srv.connect(srv.token({ sub, tenantId: 'hasty' })).then(
            (s) => (s.close(), true),
            () => false,
          );
        }
        if (!ok) refusedUsers.push(sub);
      }
      // Assert
      assert.deepEqual(refusedUsers, [], `${refusedUsers.length} of ${users.length} users stay refused with "Too many connections"`);
    } finally {
      await srv.stop();
    }
  });
});
