// PROTOCOL.md §1 (transports, upgrade, CORS, the websocket Origin check) and the §11 CORS detail.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ack,
  chat,
  joinRoom,
  openRawWebSocket,
  request,
  sendMessage,
  startServer,
  uid,
  withTimeout,
} from './helpers.mjs';

const ALLOWED = 'http://app.test';
const ALSO_ALLOWED = 'https://other.test';
const EVIL = 'http://evil.test';
let server;
let defaults; // CORS_ORIGIN left at its default (http://localhost:3000)
before(async () => {
  [server, defaults] = await Promise.all([
    startServer({ CORS_ORIGIN: `${ALLOWED},${ALSO_ALLOWED}` }),
    startServer({}),
  ]);
});
afterEach(() => {
  server.closeClients();
  defaults.closeClients();
});
after(() => Promise.all([server.stop(), defaults.stop()]));

const pollingHandshake = (srv, headers = {}) => request(`${srv.url}/socket.io/?EIO=4&transport=polling`, { headers });

describe('websocket Origin check', () => {
  test('a websocket upgrade with a disallowed Origin is refused with HTTP 403', async () => {
    // Act
    const err = await openRawWebSocket(server.url, { headers: { Origin: EVIL } }).then(
      () => assert.fail('the upgrade was accepted'),
      (e) => e,
    );
    // Assert
    assert.equal(err.statusCode, 403);
  });

  test('an origin that only differs by port is not allowed', async () => {
    // Act
    const err = await openRawWebSocket(server.url, { headers: { Origin: `${ALLOWED}:8080` } }).then(
      () => assert.fail('the upgrade was accepted'),
      (e) => e,
    );
    // Assert
    assert.equal(err.statusCode, 403);
  });

  for (const origin of [ALLOWED, ALSO_ALLOWED]) {
    test(`a websocket upgrade with the allowed Origin ${origin} opens and can CONNECT`, async () => {
      // Arrange
      const raw = await openRawWebSocket(server.url, { headers: { Origin: origin } });
      // Act
      raw.ws.send(`40/ws,${JSON.stringify({ token: server.token() })}`);
      // Assert
      assert.equal(typeof raw.open.sid, 'string');
      assert.match(await raw.next((m) => m.startsWith('40/ws,')), /"sid"/);
      raw.ws.close();
    });
  }

  test('a websocket upgrade without an Origin header (native clients) is accepted', async () => {
    // Act
    const raw = await openRawWebSocket(server.url);
    // Assert
    assert.equal(typeof raw.open.sid, 'string');
    raw.ws.close();
  });

  test('the official client over websocket with a disallowed Origin cannot connect', async () => {
    // Act
    const err = await server.refused(server.token(), { extraHeaders: { Origin: EVIL } });
    // Assert
    assert.ok(err instanceof Error);
  });

  test('the official client over websocket with an allowed Origin connects', async () => {
    // Act
    const socket = await server.connect(server.token(), { extraHeaders: { Origin: ALLOWED } });
    // Assert
    assert.equal(socket.connected, true);
  });

  test('the default CORS_ORIGIN allows http://localhost:3000 and refuses others', async () => {
    // Act
    const ok = await openRawWebSocket(defaults.url, { headers: { Origin: 'http://localhost:3000' } });
    const refused = await openRawWebSocket(defaults.url, { headers: { Origin: ALLOWED } }).catch((e) => e);
    // Assert
    assert.equal(typeof ok.open.sid, 'string');
    assert.equal(refused.statusCode, 403);
    ok.ws.close();
  });
});

describe('CORS on polling', () => {
  test('a polling request from an allowed Origin gets Access-Control-Allow-Origin and credentials', async () => {
    // Act
    const res = await pollingHandshake(server, { Origin: ALLOWED });
    // Assert
    assert.equal(res.status, 200);
    assert.equal(res.headers['access-control-allow-origin'], ALLOWED);
    assert.equal(res.headers['access-control-allow-credentials'], 'true');
  });

  test('a polling request from a disallowed Origin gets no CORS grant', async () => {
    // Act
    const res = await pollingHandshake(server, { Origin: EVIL });
    // Assert
    assert.equal(res.headers['access-control-allow-origin'], undefined);
  });

  test('a CORS preflight from an allowed Origin is granted with credentials', async () => {
    // Act
    const res = await request(`${server.url}/socket.io/?EIO=4&transport=polling`, {
      method: 'OPTIONS',
      headers: { Origin: ALLOWED, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
    });
    // Assert
    assert.ok(res.status < 300, `status ${res.status}`);
    assert.equal(res.headers['access-control-allow-origin'], ALLOWED);
    assert.equal(res.headers['access-control-allow-credentials'], 'true');
  });

  test('a CORS preflight from a disallowed Origin is not granted', async () => {
    // Act
    const res = await request(`${server.url}/socket.io/?EIO=4&transport=polling`, {
      method: 'OPTIONS',
      headers: { Origin: EVIL, 'Access-Control-Request-Method': 'POST' },
    });
    // Assert
    assert.equal(res.headers['access-control-allow-origin'], undefined);
  });

  test('a polling session opened from a disallowed Origin never upgrades to websocket', async () => {
    // Arrange
    const hs = await pollingHandshake(server, { Origin: EVIL });
    const { sid } = JSON.parse(hs.body.slice(1));
    // Act
    const err = await openRawWebSocket(server.url, { headers: { Origin: EVIL }, query: `&sid=${sid}` }).then(
      () => assert.fail('the upgrade was accepted'),
      (e) => e,
    );
    // Assert
    assert.equal(err.statusCode, 403);
  });
});

describe('transports end to end', () => {
  test('a polling-only client connects, joins, sends and receives', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const polling = await server.connect(server.token({ tenantId }), { transports: ['polling'] });
    const peer = await server.connect(server.token({ tenantId }));
    await joinRoom(polling, roomId);
    await joinRoom(peer, roomId);
    // Act
    const mine = await chat(polling, roomId, 'over polling');
    const theirs = await chat(peer, roomId, 'to polling');
    // Assert
    assert.equal((await polling.inbox.next('chat_message', (m) => m.id === mine.id)).message, 'over polling');
    assert.equal((await polling.inbox.next('chat_message', (m) => m.id === theirs.id)).message, 'to polling');
    assert.equal((await peer.inbox.next('chat_message', (m) => m.id === mine.id)).message, 'over polling');
    assert.equal(polling.io.engine.transport.name, 'polling');
  });

  test('a polling-only client gets errors and acks like a websocket client', async () => {
    // Arrange
    const socket = await server.connect(server.token(), { transports: ['polling'] });
    // Act
    const res = await sendMessage(socket, 'send_message', { roomId: uid('r'), message: 'x' });
    // Assert
    assert.equal(res.error.code, 'NOT_IN_ROOM');
    assert.equal((await socket.inbox.next('error')).code, 'NOT_IN_ROOM');
  });

  test('the default client starts on polling, upgrades to websocket and still chats', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const socket = await server.connect(server.token({ tenantId }), { transports: ['polling', 'websocket'] });
    const peer = await server.connect(server.token({ tenantId }));
    // Act
    if (socket.io.engine.transport.name !== 'websocket') {
      await withTimeout(new Promise((r) => socket.io.engine.once('upgrade', r)), 5000, 'the upgrade');
    }
    await joinRoom(socket, roomId);
    await joinRoom(peer, roomId);
    const res = await chat(socket, roomId, 'after upgrade');
    const back = await chat(peer, roomId, 'reply');
    // Assert
    assert.equal(socket.io.engine.transport.name, 'websocket');
    assert.equal((await peer.inbox.next('chat_message', (m) => m.id === res.id)).message, 'after upgrade');
    assert.equal((await socket.inbox.next('chat_message', (m) => m.id === back.id)).message, 'reply');
  });

  test('the upgrade keeps the socket id and the connected payload', async () => {
    // Arrange
    const socket = await server.connect(server.token(), { transports: ['polling', 'websocket'] });
    const id = socket.id;
    // Act
    if (socket.io.engine.transport.name !== 'websocket') {
      await withTimeout(new Promise((r) => socket.io.engine.once('upgrade', r)), 5000, 'the upgrade');
    }
    // Assert
    assert.equal(socket.id, id);
    assert.equal(socket.connectedPayload.connectionId, id);
    assert.equal(socket.inbox.all('connected').length, 1);
  });

  test('an upgrade from an allowed Origin works with the official client', async () => {
    // Arrange
    const socket = await server.connect(server.token(), {
      transports: ['polling', 'websocket'],
      transportOptions: { websocket: { extraHeaders: { Origin: ALLOWED } } },
    });
    // Act
    if (socket.io.engine.transport.name !== 'websocket') {
      await withTimeout(new Promise((r) => socket.io.engine.once('upgrade', r)), 5000, 'the upgrade');
    }
    // Assert
    assert.equal(socket.io.engine.transport.name, 'websocket');
    assert.equal(socket.connected, true);
  });

  test('the Engine.IO handshake advertises the websocket upgrade and Socket.IO path', async () => {
    // Act
    const res = await pollingHandshake(server);
    // Assert
    assert.equal(res.status, 200);
    const open = JSON.parse(res.body.slice(1));
    assert.equal(res.body[0], '0');
    assert.deepEqual(open.upgrades, ['websocket']);
    assert.equal(typeof open.pingInterval, 'number');
    assert.equal(typeof open.pingTimeout, 'number');
  });

  test('the Engine.IO defaults are pingInterval 25 s, pingTimeout 20 s and maxPayload 1,000,000', async () => {
    // Act
    const res = await pollingHandshake(defaults);
    // Assert
    const open = JSON.parse(res.body.slice(1));
    assert.equal(open.pingInterval, 25000);
    assert.equal(open.pingTimeout, 20000);
    assert.equal(open.maxPayload, 1000000);
  });
});

describe('the core flow on every transport', () => {
  for (const [name, transports] of [
    ['websocket', ['websocket']],
    ['polling', ['polling']],
    ['polling upgraded to websocket', ['polling', 'websocket']],
  ]) {
    test(`over ${name}: connected, join, chat, typing, an error event, leave`, async () => {
      // Arrange
      const tenantId = uid('t');
      const roomId = uid('room');
      const socket = await server.connect(server.token({ tenantId, name: 'Flow' }), { transports });
      const peer = await server.connect(server.token({ tenantId }));
      await joinRoom(peer, roomId);
      // Act + Assert
      assert.equal(socket.connectedPayload.connectionId, socket.id);
      await joinRoom(socket, roomId);
      assert.deepEqual(await socket.inbox.next('joined_room'), { roomId });
      const sent = await chat(socket, roomId, `via ${name}`);
      const echo = await socket.inbox.next('chat_message', (m) => m.id === sent.id);
      assert.equal(echo.userName, 'Flow');
      assert.equal((await peer.inbox.next('chat_message', (m) => m.id === sent.id)).message, `via ${name}`);
      const reply = await chat(peer, roomId, 'back');
      await socket.inbox.next('chat_message', (m) => m.id === reply.id);
      assert.equal((await sendMessage(peer, 'typing_start', { roomId })).ok, true);
      assert.equal((await socket.inbox.next('user_typing')).typing, true);
      const failed = await sendMessage(socket, 'send_message', { roomId: uid('elsewhere'), message: 'x' });
      assert.equal(failed.error.code, 'NOT_IN_ROOM');
      assert.equal((await socket.inbox.next('error')).code, 'NOT_IN_ROOM');
      assert.deepEqual(await ack(socket, 'leave_room', { roomId }), { ok: true, roomId });
      assert.deepEqual(await socket.inbox.next('left_room'), { roomId });
    });
  }
});

describe('Engine.IO heartbeat', () => {
  test('a websocket that answers pings stays connected; one that stops is closed after pingInterval + pingTimeout', { timeout: 15000 }, async () => {
    // Arrange
    const fast = await startServer({ PING_INTERVAL_MS: '200', PING_TIMEOUT_MS: '300' });
    try {
      const connect = async (answerPings) => {
        const raw = await openRawWebSocket(fast.url, { answerPings });
        raw.ws.send(`40/ws,${JSON.stringify({ token: fast.token() })}`);
        await raw.next((m) => m.startsWith('40/ws,'));
        return raw;
      };
      const [alive, silent] = await Promise.all([connect(true), connect(false)]);
      const started = Date.now();
      // Act
      const closed = await withTimeout(silent.closed, 5000, 'the silent socket to be closed');
      // Assert
      const after = Date.now() - started;
      assert.ok(after >= 200, `closed after ${after} ms: not before the first ping was due`);
      assert.ok(closed.code !== undefined);
      // Several ping rounds later the answering socket is still served.
      await new Promise((r) => setTimeout(r, 1000));
      assert.ok(alive.messages.filter((m) => m.text === '2').length >= 4, 'pings keep coming');
      assert.equal(alive.ws.readyState, alive.ws.OPEN);
      alive.ws.send('42/ws,7["message",{"type":"mystery","data":{}}]');
      assert.match(await alive.next((m) => m.startsWith('43/ws,7')), /UNKNOWN_EVENT/);
      alive.ws.close();
    } finally {
      await fast.stop();
    }
  });

  test('a long-polling session that stops polling is closed after pingTimeout; one that polls stays connected', { timeout: 15000 }, async () => {
    // Arrange
    const fast = await startServer({ PING_INTERVAL_MS: '200', PING_TIMEOUT_MS: '300' });
    try {
      const base = `${fast.url}/socket.io/?EIO=4&transport=polling`;
      const open = await request(base);
      const { sid } = JSON.parse(open.body.slice(1));
      const connect = await request(`${base}&sid=${sid}`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain;charset=UTF-8' },
        body: `40/ws,${JSON.stringify({ token: fast.token() })}`,
      });
      assert.equal(connect.status, 200);
      const polling = await fast.connect(fast.token(), { transports: ['polling'] });
      // Act: the raw session never polls, so its pings are never answered.
      const deadline = Date.now() + 5000;
      let gone;
      while (Date.now() < deadline) {
        gone = await request(`${base}&sid=${sid}`, { method: 'POST', headers: { 'content-type': 'text/plain;charset=UTF-8' }, body: '6' });
        if (gone.status !== 200) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      // Assert: the session is unknown now (closed by its heartbeat); the polling client,
      // which answers its pings, is served several ping rounds later.
      assert.equal(gone.status, 400, `the silent session is closed: ${gone.status} ${gone.body}`);
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(polling.connected, true);
      const res = await sendMessage(polling, 'mystery', {});
      assert.equal(res.error.code, 'UNKNOWN_EVENT');
    } finally {
      await fast.stop();
    }
  });
});
