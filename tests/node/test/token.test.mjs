// PROTOCOL.md §2 "expiry while connected", §5 `refresh_token` and the §11 token details.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { promisify } from 'node:util';

import {
  RFC3339_UTC,
  ack,
  assertErrorEvent,
  chat,
  disconnected,
  expectFailure,
  joinRoom,
  SECRET,
  nowSecs,
  signToken,
  startServer,
  uid,
} from './helpers.mjs';

let server;
before(async () => {
  server = await startServer();
});
afterEach(() => server.closeClients());
after(() => server.stop());

/** exp such that the live cut (exp + 30 s leeway) comes in 1-2 seconds. */
const soonExp = () => nowSecs() - 28;

/**
 * An HS256 token over a payload given as JSON text, for numbers JavaScript cannot write
 * (`1767225600.0`, integers near 2^63).
 */
function rawToken(payloadJson) {
  const input = `${Buffer.from('{"alg":"HS256","typ":"JWT"}').toString('base64url')}.${Buffer.from(payloadJson).toString('base64url')}`;
  return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}

/** Runs SQL on the server's SQLite database from outside the gateway. */
async function sqlite(server, sql) {
  const file = server.env.DATABASE_URL.replace(/^sqlite:\/\//, '');
  const py = `import sqlite3,sys\nc=sqlite3.connect(sys.argv[1],timeout=5)\nc.executescript(sys.argv[2])\nc.close()`;
  await promisify(execFile)('python3', ['-c', py, file, sql], { timeout: 10000 });
}

describe('refresh_token', () => {
  test('a valid refresh answers token_refreshed { exp } and an ok ack', async () => {
    // Arrange
    const sub = uid('u');
    const tenantId = uid('t');
    const socket = await server.connect(server.token({ sub, tenantId }));
    const exp = nowSecs() + 7200;
    // Act
    const res = await ack(socket, 'refresh_token', { token: server.token({ sub, tenantId, exp }) });
    // Assert
    assert.deepEqual(res, { ok: true, exp });
    assert.deepEqual(await socket.inbox.next('token_refreshed'), { exp });
  });

  test('after a refresh the socket outlives the old token exp', { timeout: 20000 }, async () => {
    // Arrange: two sockets whose token is cut in 1-2 s; only one refreshes
    const sub = uid('u');
    const tenantId = uid('t');
    const old = server.token({ sub, tenantId, exp: soonExp() });
    const refreshed = await server.connect(old);
    const control = await server.connect(old);
    const fresh = server.token({ sub, tenantId, exp: nowSecs() + 3600 });
    // Act
    assert.equal((await ack(refreshed, 'refresh_token', { token: fresh })).ok, true);
    // Assert: the control socket is cut at the old exp; the refreshed one is still served after
    assert.equal((await control.inbox.next('error', (e) => e.code === 'TOKEN_EXPIRED', 10000)).message, 'Token expired');
    assert.equal(await disconnected(control), 'io server disconnect');
    await joinRoom(refreshed, uid('room'));
    assert.equal(refreshed.connected, true);
    assert.deepEqual(refreshed.inbox.all('error'), []);
    assert.deepEqual(refreshed.inbox.all('disconnect'), []);
  });

  test('a refresh token for another sub is refused with INVALID_TOKEN', async () => {
    // Arrange
    const tenantId = uid('t');
    const socket = await server.connect(server.token({ tenantId }));
    // Act + Assert
    await expectFailure(socket, 'refresh_token', { token: server.token({ sub: uid('other'), tenantId }) }, 'INVALID_TOKEN');
  });

  test('a refresh token for another tenant is refused with INVALID_TOKEN', async () => {
    // Arrange
    const sub = uid('u');
    const socket = await server.connect(server.token({ sub, tenantId: uid('t1') }));
    // Act + Assert
    await expectFailure(socket, 'refresh_token', { token: server.token({ sub, tenantId: uid('t2') }) }, 'INVALID_TOKEN');
  });

  test('a refresh token that adds a tenant to a tenant-less connection is refused with INVALID_TOKEN', async () => {
    // Arrange
    const sub = uid('u');
    const socket = await server.connect(server.token({ sub }));
    // Act + Assert
    await expectFailure(socket, 'refresh_token', { token: server.token({ sub, tenantId: uid('t') }) }, 'INVALID_TOKEN');
  });

  test('a refresh token without the tenant of the connection is refused with INVALID_TOKEN', async () => {
    // Arrange
    const sub = uid('u');
    const socket = await server.connect(server.token({ sub, tenantId: uid('t') }));
    // Act + Assert
    await expectFailure(socket, 'refresh_token', { token: server.token({ sub }) }, 'INVALID_TOKEN');
  });

  for (const [what, token] of [
    ['garbage', () => 'garbage'],
    ['an empty string', () => ''],
    ['signed with another secret', (sub) => signToken({ sub }, { secret: 'a-completely-different-secret-of-32-bytes!' })],
    ['expired beyond the leeway', (sub) => signToken({ sub, exp: nowSecs() - 120 })],
    ['not yet valid (nbf in the future)', (sub) => signToken({ sub, nbf: nowSecs() + 300 })],
    ['unsigned (alg none)', (sub) => `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub })).toString('base64url')}.`],
  ]) {
    test(`a refresh token that is ${what} is refused with INVALID_TOKEN`, async () => {
      // Arrange
      const sub = uid('u');
      const socket = await server.connect(server.token({ sub }));
      // Act + Assert
      await expectFailure(socket, 'refresh_token', { token: token(sub) }, 'INVALID_TOKEN');
      assert.equal(socket.connected, true);
    });
  }

  test('a refresh_token without a token field is refused with INVALID_TOKEN', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    // Act + Assert
    await expectFailure(socket, 'refresh_token', {}, 'INVALID_TOKEN');
  });

  test('a failed refresh keeps the connection and its old token', async () => {
    // Arrange
    const sub = uid('u');
    const socket = await server.connect(server.token({ sub, name: 'Old Name', tenantId: 'keep' }));
    const roomId = uid('room');
    await joinRoom(socket, roomId);
    await expectFailure(socket, 'refresh_token', { token: 'garbage' }, 'INVALID_TOKEN');
    // Act
    await chat(socket, roomId, 'still old');
    // Assert
    const m = await socket.inbox.next('chat_message');
    assert.equal(m.userName, 'Old Name');
    assert.equal(socket.connected, true);
  });

  test('the new token name replaces the old one for later messages', async () => {
    // Arrange
    const sub = uid('u');
    const tenantId = uid('t');
    const socket = await server.connect(server.token({ sub, tenantId, name: 'Before' }));
    const roomId = uid('room');
    await joinRoom(socket, roomId);
    // Act
    assert.equal((await ack(socket, 'refresh_token', { token: server.token({ sub, tenantId, name: 'After' }) })).ok, true);
    await chat(socket, roomId, 'renamed');
    // Assert
    assert.equal((await socket.inbox.next('chat_message')).userName, 'After');
  });

  test('the new token rooms claim grants private rooms the old one did not', async () => {
    // Arrange
    const sub = uid('u');
    const roomId = `private:${uid('p')}`;
    const socket = await server.connect(server.token({ sub }));
    await expectFailure(socket, 'join_room', { roomId }, 'ACCESS_DENIED');
    // Act
    assert.equal((await ack(socket, 'refresh_token', { token: server.token({ sub, rooms: [roomId] }) })).ok, true);
    // Assert
    await joinRoom(socket, roomId);
  });

  test('a new token without a private room takes the socket out of it (left_room) and bars rejoining', async () => {
    // Arrange
    const sub = uid('u');
    const roomId = `private:${uid('p')}`;
    const socket = await server.connect(server.token({ sub, rooms: [roomId] }));
    await joinRoom(socket, roomId);
    // Act
    assert.equal((await ack(socket, 'refresh_token', { token: server.token({ sub, rooms: [] }) })).ok, true);
    // Assert
    assert.deepEqual(await socket.inbox.next('left_room'), { roomId });
    await expectFailure(socket, 'message', { type: 'send_message', data: { roomId, message: 'x' } }, 'NOT_IN_ROOM');
    await expectFailure(socket, 'join_room', { roomId }, 'ACCESS_DENIED', 'Access denied to room');
  });
});

describe('expiry while connected', () => {
  test('when exp plus the leeway passes, the server emits error TOKEN_EXPIRED and disconnects (io server disconnect), over both transports', { timeout: 20000 }, async () => {
    // Arrange
    const token = server.token({ exp: soonExp() });
    const ws = await server.connect(token);
    const polling = await server.connect(token, { transports: ['polling'] });
    // Inside the leeway the sockets are served normally
    await joinRoom(ws, uid('room'));
    await joinRoom(polling, uid('room'));
    // Act
    const reasons = await Promise.all([disconnected(ws, 10000), disconnected(polling, 10000)]);
    // Assert
    assert.deepEqual(reasons, ['io server disconnect', 'io server disconnect']);
    for (const socket of [ws, polling]) {
      const err = socket.inbox.all('error');
      assert.equal(err.length, 1);
      assertErrorEvent(err[0], 'TOKEN_EXPIRED', 'Token expired');
      const [errIdx] = socket.inbox.indexes('error');
      const [discIdx] = socket.inbox.indexes('disconnect');
      assert.ok(errIdx < discIdx, 'the error comes before the disconnect');
      assert.match(err[0].timestamp, RFC3339_UTC);
    }
  });

  test('the official client does not reconnect after the expiry disconnect', { timeout: 20000 }, async () => {
    // Arrange
    const socket = await server.connect(server.token({ exp: soonExp() }), { reconnection: true, reconnectionDelay: 50 });
    // Act
    assert.equal(await disconnected(socket, 10000), 'io server disconnect');
    // Assert: a reconnect attempt would emit on the manager; with io server disconnect there is none
    const attempted = await Promise.race([
      new Promise((r) => socket.io.once('reconnect_attempt', () => r(true))),
      // A barrier, not a timing assertion: a fresh connection's full round trip.
      server.connect(server.token()).then(() => false),
    ]);
    assert.equal(attempted, false);
    assert.equal(socket.active, false);
  });
});

describe('token edges', () => {
  test('a float exp (1767225600.0 style) still cuts the socket at expiry', { timeout: 20000 }, async () => {
    // Arrange
    const socket = await server.connect(rawToken(`{"sub":"${uid('float')}","exp":${soonExp()}.0}`));
    // Act + Assert
    assertErrorEvent(await socket.inbox.next('error', (e) => e.code === 'TOKEN_EXPIRED', 10000), 'TOKEN_EXPIRED', 'Token expired');
    assert.equal(await disconnected(socket), 'io server disconnect');
  });

  test('a refresh that shortens exp re-arms the cut at the new exp', { timeout: 20000 }, async () => {
    // Arrange
    const sub = uid('u');
    const socket = await server.connect(server.token({ sub, exp: nowSecs() + 3600 }));
    // Act
    const res = await ack(socket, 'refresh_token', { token: server.token({ sub, exp: soonExp() }) });
    assert.equal(res.ok, true);
    // Assert
    await socket.inbox.next('error', (e) => e.code === 'TOKEN_EXPIRED', 10000);
    assert.equal(await disconnected(socket), 'io server disconnect');
  });

  test('an exp near i64::MAX is accepted and the deadline task keeps cutting other sockets', { timeout: 20000 }, async () => {
    // Arrange: exp values at the top of the i64 range and beyond it
    const huge = [];
    for (const exp of ['9223372036854775000', '9223372036854775800', '9223372036854775807', '18446744073709551000', '1.8e19']) {
      huge.push(await server.connect(rawToken(`{"sub":"${uid('huge')}","exp":${exp}}`)));
    }
    // Act: a socket whose token is cut in 1-2 s, watched by the same deadline task
    const soon = await server.connect(server.token({ exp: soonExp() }));
    // Assert
    await soon.inbox.next('error', (e) => e.code === 'TOKEN_EXPIRED', 10000);
    assert.equal(await disconnected(soon), 'io server disconnect');
    for (const s of huge) await joinRoom(s, uid('room'));
  });
});

describe('a refresh that fails a check', () => {
  let own;
  before(async () => {
    own = await startServer();
  });
  after(() => own.stop());

  test('leaves the old principal, rooms and exp in place when the store fails', { timeout: 20000 }, async () => {
    // Arrange: in a private room by the token's claim, and in an open room
    const sub = uid('u');
    const priv = `private:${uid('p')}`;
    const open = uid('room');
    const socket = await own.connect(own.token({ sub, name: 'Old', rooms: [priv], exp: nowSecs() + 3600 }));
    await joinRoom(socket, priv);
    await joinRoom(socket, open);
    // The grants table goes away: checking whether the new token may keep the room fails
    await sqlite(own, 'ALTER TABLE room_grants RENAME TO room_grants_gone;');
    // Act: a new token without the room, another name and an exp about to pass
    await expectFailure(socket, 'refresh_token', { token: own.token({ sub, name: 'New', exp: soonExp() }) }, 'UNAVAILABLE');
    // Assert: the old name is used, the private room kept
    await chat(socket, open, 'after the failed refresh');
    assert.equal((await socket.inbox.next('chat_message')).userName, 'Old');
    await chat(socket, priv, 'still in the private room');
    assert.deepEqual(socket.inbox.all('left_room'), []);
    // and the old exp: a control socket cut after the refused token's exp would have passed
    const control = await own.connect(own.token({ exp: soonExp() + 1 }));
    await control.inbox.next('error', (e) => e.code === 'TOKEN_EXPIRED', 10000);
    await joinRoom(socket, uid('room'));
    assert.deepEqual(socket.inbox.all('error', (e) => e.code === 'TOKEN_EXPIRED'), []);
    await sqlite(own, 'ALTER TABLE room_grants_gone RENAME TO room_grants;');
  });
});
