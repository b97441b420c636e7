// PROTOCOL.md §4 (rooms) and §5 `join_room` / `leave_room`, with the §11 room details.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ack, chat, expectFailure, joinRoom, sendMessage, startServer, uid } from './helpers.mjs';

let server;
let small; // MAX_ROOMS_PER_CONNECTION=2
before(async () => {
  [server, small] = await Promise.all([startServer(), startServer({ MAX_ROOMS_PER_CONNECTION: 2 })]);
});
afterEach(() => {
  server.closeClients();
  small.closeClients();
});
after(() => Promise.all([server.stop(), small.stop()]));

/** A connected user of `tenantId` (a fresh one when omitted). */
const user = (claims = {}, srv = server) => srv.connect(srv.token({ tenantId: uid('t'), ...claims }));

describe('join_room', () => {
  test('join_room answers joined_room and the ack { ok: true, roomId }', async () => {
    // Arrange
    const socket = await user();
    const roomId = uid('room');
    // Act
    const res = await ack(socket, 'join_room', { roomId });
    // Assert
    assert.deepEqual(res, { ok: true, roomId });
    assert.deepEqual(await socket.inbox.next('joined_room'), { roomId });
  });

  test('joined_room is emitted before the ack arrives', async () => {
    // Arrange
    const socket = await user();
    const roomId = uid('room');
    // Act
    await ack(socket, 'join_room', { roomId });
    // Assert: already received when the ack resolved
    assert.deepEqual(socket.inbox.pending('joined_room'), [{ roomId }]);
  });

  test('join_room without an ack callback still answers joined_room', async () => {
    // Arrange
    const socket = await user();
    const roomId = uid('room');
    // Act
    socket.emit('join_room', { roomId });
    // Assert
    assert.deepEqual(await socket.inbox.next('joined_room'), { roomId });
  });

  test('a room id using every allowed character class is accepted', async () => {
    // Arrange
    const socket = await user();
    const roomId = 'Az09_.:-' + uid('r');
    // Act + Assert
    await joinRoom(socket, roomId);
  });

  test('a room id of exactly 128 characters is accepted', async () => {
    // Arrange
    const socket = await user();
    const roomId = 'r'.repeat(128);
    // Act + Assert
    await joinRoom(socket, roomId);
  });

  for (const [what, roomId] of [
    ['a space', 'bad room'],
    ['a slash', 'a/b'],
    ['a non-ASCII letter', 'caf\u00e9'],
    ['an emoji', 'room-\u{1F600}'],
    ['a hash', '#general'],
    ['129 characters', 'r'.repeat(129)],
    ['no characters', ''],
  ]) {
    test(`a room id with ${what} is refused with INVALID_ROOM`, async () => {
      // Arrange
      const socket = await user();
      // Act + Assert
      await expectFailure(socket, 'join_room', { roomId }, 'INVALID_ROOM');
    });
  }

  for (const [what, payload] of [
    ['a number roomId', { roomId: 42 }],
    ['a null roomId', { roomId: null }],
    ['an array roomId', { roomId: ['general'] }],
    ['a missing roomId', {}],
    ['a misspelled roomId key', { room: 'general' }],
  ]) {
    test(`join_room with ${what} is refused with INVALID_ROOM`, async () => {
      // Arrange
      const socket = await user();
      // Act + Assert
      await expectFailure(socket, 'join_room', payload, 'INVALID_ROOM');
    });
  }

  for (const [what, payload] of [
    ['a string', 'general'],
    ['a number', 7],
    ['null', null],
    ['an array', ['general']],
    ['a boolean', true],
  ]) {
    test(`join_room whose payload is ${what} is refused with INVALID_PAYLOAD`, async () => {
      // Arrange
      const socket = await user();
      // Act + Assert
      await expectFailure(socket, 'join_room', payload, 'INVALID_PAYLOAD');
    });
  }

  test('a refused join_room does not put the socket in the room', async () => {
    // Arrange
    const socket = await user();
    const roomId = `private:${uid('closed')}`;
    await expectFailure(socket, 'join_room', { roomId }, 'ACCESS_DENIED');
    // Act + Assert
    await expectFailure(socket, 'message', { type: 'send_message', data: { roomId, message: 'x' } }, 'NOT_IN_ROOM');
  });

  test('a message sent right after join_room without waiting for its ack is accepted', async () => {
    // Arrange
    const socket = await user();
    const roomId = uid('room');
    // Act: emit both at once; events of one socket are handled in order
    const joined = ack(socket, 'join_room', { roomId });
    const sent = sendMessage(socket, 'send_message', { roomId, message: 'right away' });
    // Assert
    assert.deepEqual(await joined, { ok: true, roomId });
    assert.equal((await sent).ok, true);
    assert.equal((await socket.inbox.next('chat_message')).message, 'right away');
  });
});

describe('tenant scope', () => {
  test('the same room name in two tenants never crosses', async () => {
    // Arrange
    const [tA, tB] = [uid('tA'), uid('tB')];
    const a = await user({ tenantId: tA });
    const b = await user({ tenantId: tB });
    const roomId = 'general';
    await joinRoom(a, roomId);
    await joinRoom(b, roomId);
    // Act
    await chat(b, roomId, 'from tenant B');
    await chat(a, roomId, 'from tenant A');
    // Assert: A's own message is the barrier; B's never arrives at A (and vice versa)
    assert.equal((await a.inbox.next('chat_message')).message, 'from tenant A');
    assert.equal((await b.inbox.next('chat_message')).message, 'from tenant B');
    assert.deepEqual(a.inbox.all('chat_message').map((m) => m.message), ['from tenant A']);
    await chat(b, roomId, 'B again');
    await b.inbox.next('chat_message', (m) => m.message === 'B again');
    assert.deepEqual(b.inbox.all('chat_message').map((m) => m.message), ['from tenant B', 'B again']);
  });

  test('typing in a room of one tenant never reaches the same room of another tenant', async () => {
    // Arrange
    const a = await user({ tenantId: uid('tA') });
    const b = await user({ tenantId: uid('tB') });
    const roomId = uid('shared-name');
    await joinRoom(a, roomId);
    await joinRoom(b, roomId);
    // Act
    assert.equal((await sendMessage(b, 'typing_start', { roomId })).ok, true);
    await chat(a, roomId, 'barrier');
    await a.inbox.next('chat_message');
    // Assert
    assert.deepEqual(a.inbox.all('user_typing'), []);
  });

  test('users without a tenant share the no-tenant scope', async () => {
    // Arrange
    const a = await server.connect(server.token());
    const b = await server.connect(server.token());
    const roomId = uid('no-tenant-room');
    await joinRoom(a, roomId);
    await joinRoom(b, roomId);
    // Act
    await chat(a, roomId, 'hello no-tenant');
    // Assert
    assert.equal((await b.inbox.next('chat_message')).message, 'hello no-tenant');
  });

  test('the no-tenant scope and a tenant never share a room', async () => {
    // Arrange
    const roomId = uid('scoped');
    const none = await server.connect(server.token());
    const tenanted = await user();
    await joinRoom(none, roomId);
    await joinRoom(tenanted, roomId);
    // Act
    await chat(none, roomId, 'no tenant');
    await chat(tenanted, roomId, 'tenant');
    // Assert
    assert.equal((await tenanted.inbox.next('chat_message')).message, 'tenant');
    assert.deepEqual(tenanted.inbox.all('chat_message').map((m) => m.message), ['tenant']);
  });
});

describe('reserved rooms', () => {
  test('joining the own user room succeeds', async () => {
    // Arrange
    const socket = await user();
    const roomId = `user:${socket.connectedPayload.userId}`;
    // Act
    const res = await ack(socket, 'join_room', { roomId });
    // Assert
    assert.deepEqual(res, { ok: true, roomId });
  });

  test('joining the own tenant room succeeds', async () => {
    // Arrange
    const tenantId = uid('t');
    const socket = await user({ tenantId });
    const roomId = `tenant:${tenantId}`;
    // Act
    const res = await ack(socket, 'join_room', { roomId });
    // Assert
    assert.deepEqual(res, { ok: true, roomId });
  });

  test('joining the own user and tenant rooms does nothing: they do not count as joined rooms', async () => {
    // Arrange
    const tenantId = uid('t');
    const socket = await user({ tenantId });
    const own = `user:${socket.connectedPayload.userId}`;
    await joinRoom(socket, own);
    await joinRoom(socket, `tenant:${tenantId}`);
    // Act + Assert: sending there is NOT_IN_ROOM, as without the join
    await expectFailure(socket, 'message', { type: 'send_message', data: { roomId: own, message: 'x' } }, 'NOT_IN_ROOM');
    await expectFailure(
      socket,
      'message',
      { type: 'send_message', data: { roomId: `tenant:${tenantId}`, message: 'x' } },
      'NOT_IN_ROOM',
    );
  });

  test('joining the own reserved rooms does not use up MAX_ROOMS_PER_CONNECTION', async () => {
    // Arrange
    const tenantId = uid('t');
    const socket = await user({ tenantId }, small);
    await joinRoom(socket, `user:${socket.connectedPayload.userId}`);
    await joinRoom(socket, `tenant:${tenantId}`);
    // Act + Assert: the two allowed rooms still fit
    await joinRoom(socket, uid('r1'));
    await joinRoom(socket, uid('r2'));
  });

  test('joining another user room is refused with ACCESS_DENIED', async () => {
    // Arrange
    const socket = await user();
    // Act + Assert
    await expectFailure(socket, 'join_room', { roomId: `user:${uid('someone-else')}` }, 'ACCESS_DENIED', 'Access denied to room');
  });

  test('joining another tenant room is refused with ACCESS_DENIED', async () => {
    // Arrange
    const socket = await user();
    // Act + Assert
    await expectFailure(socket, 'join_room', { roomId: `tenant:${uid('other')}` }, 'ACCESS_DENIED', 'Access denied to room');
  });

  test('a tenant-less user joining a tenant room is refused with ACCESS_DENIED', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    // Act + Assert
    await expectFailure(socket, 'join_room', { roomId: `tenant:${uid('t')}` }, 'ACCESS_DENIED', 'Access denied to room');
  });

  test('a refused join of another user room delivers nothing of that user', async () => {
    // Arrange: tenant-less users, whose user_status goes to their own user room (§11)
    const victim = await server.connect(server.token());
    const spy = await server.connect(server.token());
    const victimId = victim.connectedPayload.userId;
    await expectFailure(spy, 'join_room', { roomId: `user:${victimId}` }, 'ACCESS_DENIED');
    // Act
    assert.equal((await sendMessage(victim, 'user_status', { status: 'busy' })).ok, true);
    await victim.inbox.next('user_status', (d) => d.status === 'busy');
    // Barrier: the spy's own status reaches it after the victim's was published
    assert.equal((await sendMessage(spy, 'user_status', { status: 'away' })).ok, true);
    await spy.inbox.next('user_status', (d) => d.status === 'away');
    // Assert
    assert.deepEqual(spy.inbox.all('user_status', (d) => d.userId === victimId), []);
  });
});

describe('private rooms', () => {
  test('a private room without the rooms claim is refused with ACCESS_DENIED', async () => {
    // Arrange
    const socket = await user();
    // Act + Assert
    await expectFailure(socket, 'join_room', { roomId: `private:${uid('ops')}` }, 'ACCESS_DENIED', 'Access denied to room');
  });

  test('a private room listed in the rooms claim can be joined and used', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = `private:${uid('ops')}`;
    const a = await user({ tenantId, rooms: [roomId] });
    const b = await user({ tenantId, rooms: [roomId] });
    await joinRoom(a, roomId);
    await joinRoom(b, roomId);
    // Act
    await chat(a, roomId, 'secret');
    // Assert
    assert.equal((await b.inbox.next('chat_message')).message, 'secret');
  });

  test('the rooms claim grants only the rooms it lists', async () => {
    // Arrange
    const socket = await user({ rooms: ['private:alpha'] });
    // Act + Assert
    await expectFailure(socket, 'join_room', { roomId: 'private:beta' }, 'ACCESS_DENIED', 'Access denied to room');
  });

  test('a room merely containing "private" is open to every user of the tenant', async () => {
    // Arrange
    const socket = await user();
    // Act + Assert
    await joinRoom(socket, `not-private:${uid('x')}`);
  });
  test('a refused join of a private room with since replays nothing of it', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = `private:${uid('vault')}`;
    const insider = await user({ tenantId, rooms: [roomId] });
    await joinRoom(insider, roomId);
    await chat(insider, roomId, 'secret');
    const outsider = await user({ tenantId });
    // Act
    await expectFailure(outsider, 'join_room', { roomId, since: 0 }, 'ACCESS_DENIED', 'Access denied to room');
    // Barrier: a later delivery to the outsider (its own join, which answers after any replay)
    await joinRoom(outsider, uid('public'));
    // Assert
    assert.deepEqual(outsider.inbox.all('chat_message'), []);
    assert.deepEqual(outsider.inbox.all('joined_room', (d) => d.roomId === roomId), []);
  });
});

describe('room limit', () => {
  test('joining more than MAX_ROOMS_PER_CONNECTION rooms is refused with TOO_MANY_ROOMS', async () => {
    // Arrange
    const socket = await user({}, small);
    await joinRoom(socket, uid('r1'));
    await joinRoom(socket, uid('r2'));
    // Act + Assert
    await expectFailure(socket, 'join_room', { roomId: uid('r3') }, 'TOO_MANY_ROOMS');
  });

  test('rejoining a room already joined at the limit succeeds', async () => {
    // Arrange
    const socket = await user({}, small);
    const r1 = uid('r1');
    await joinRoom(socket, r1);
    await joinRoom(socket, uid('r2'));
    // Act + Assert
    await joinRoom(socket, r1);
  });

  test('after leaving a room, another one fits under the limit', async () => {
    // Arrange
    const socket = await user({}, small);
    const r1 = uid('r1');
    await joinRoom(socket, r1);
    await joinRoom(socket, uid('r2'));
    await expectFailure(socket, 'join_room', { roomId: uid('r3') }, 'TOO_MANY_ROOMS');
    // Act
    assert.deepEqual(await ack(socket, 'leave_room', { roomId: r1 }), { ok: true, roomId: r1 });
    // Assert
    await joinRoom(socket, uid('r3'));
  });

  test('the room limit is per connection: another connection of the same user has its own', async () => {
    // Arrange
    const token = small.token({ tenantId: uid('t') });
    const a = await small.connect(token);
    await joinRoom(a, uid('r1'));
    await joinRoom(a, uid('r2'));
    const b = await small.connect(token);
    // Act + Assert
    await joinRoom(b, uid('r3'));
  });
  test('a join with since refused by the room limit replays nothing', async () => {
    // Arrange
    const tenantId = uid('t');
    const full = uid('full');
    const writer = await user({ tenantId }, small);
    await joinRoom(writer, full);
    await chat(writer, full, 'history');
    const socket = await user({ tenantId }, small);
    await joinRoom(socket, uid('r1'));
    await joinRoom(socket, uid('r2'));
    // Act
    await expectFailure(socket, 'join_room', { roomId: full, since: 0 }, 'TOO_MANY_ROOMS');
    await ack(socket, 'join_room', { roomId: `user:${socket.connectedPayload.userId}` }); // barrier
    // Assert
    assert.deepEqual(socket.inbox.all('chat_message'), []);
  });
});

describe('joining twice', () => {
  test('a socket that joins a room twice receives each message once', async () => {
    // Arrange
    const sender = await user({ tenantId: 'twice' });
    const receiver = await user({ tenantId: 'twice' });
    const roomId = uid('room');
    await joinRoom(sender, roomId);
    await joinRoom(receiver, roomId);
    await joinRoom(receiver, roomId);
    // Act
    const first = await chat(sender, roomId, 'one');
    const second = await chat(sender, roomId, 'two');
    // Assert: the second message is the barrier for duplicates of the first
    await receiver.inbox.next('chat_message', (m) => m.id === second.id);
    assert.deepEqual(
      receiver.inbox.all('chat_message').map((m) => m.id),
      [first.id, second.id],
    );
  });

  test('the second join also answers joined_room and an ok ack', async () => {
    // Arrange
    const socket = await user();
    const roomId = uid('room');
    await joinRoom(socket, roomId);
    // Act
    const res = await ack(socket, 'join_room', { roomId });
    // Assert
    assert.deepEqual(res, { ok: true, roomId });
    assert.equal(socket.inbox.all('joined_room').length, 2);
  });
});

describe('leave_room', () => {
  test('leave_room answers left_room and the ack { ok: true, roomId }', async () => {
    // Arrange
    const socket = await user();
    const roomId = uid('room');
    await joinRoom(socket, roomId);
    // Act
    const res = await ack(socket, 'leave_room', { roomId });
    // Assert
    assert.deepEqual(res, { ok: true, roomId });
    assert.deepEqual(await socket.inbox.next('left_room'), { roomId });
  });

  test('after leave_room the socket receives no more messages of the room', async () => {
    // Arrange
    const tenantId = uid('t');
    const sender = await user({ tenantId });
    const leaver = await user({ tenantId });
    const [room, other] = [uid('room'), uid('other')];
    for (const s of [sender, leaver]) {
      await joinRoom(s, room);
      await joinRoom(s, other);
    }
    await ack(leaver, 'leave_room', { roomId: room });
    // Act
    await chat(sender, room, 'after leave');
    await chat(sender, other, 'barrier');
    // Assert
    await leaver.inbox.next('chat_message', (m) => m.message === 'barrier');
    assert.deepEqual(leaver.inbox.all('chat_message', (m) => m.roomId === room), []);
  });

  test('after leave_room sending to the room is refused with NOT_IN_ROOM', async () => {
    // Arrange
    const socket = await user();
    const roomId = uid('room');
    await joinRoom(socket, roomId);
    await ack(socket, 'leave_room', { roomId });
    // Act + Assert
    await expectFailure(socket, 'message', { type: 'send_message', data: { roomId, message: 'x' } }, 'NOT_IN_ROOM', 'Not in room');
  });

  test('leaving the own user room is refused with INVALID_ROOM', async () => {
    // Arrange
    const socket = await user();
    // Act + Assert
    await expectFailure(socket, 'leave_room', { roomId: `user:${socket.connectedPayload.userId}` }, 'INVALID_ROOM');
  });

  test('leaving the own tenant room is refused with INVALID_ROOM', async () => {
    // Arrange
    const tenantId = uid('t');
    const socket = await user({ tenantId });
    // Act + Assert
    await expectFailure(socket, 'leave_room', { roomId: `tenant:${tenantId}` }, 'INVALID_ROOM');
  });

  test('after the refused leave of the own user room the socket still gets its user deliveries', async () => {
    // Arrange: tenant-less, so user_status goes to the user's connections
    const token = server.token();
    const a = await server.connect(token);
    const b = await server.connect(token);
    await expectFailure(b, 'leave_room', { roomId: `user:${b.connectedPayload.userId}` }, 'INVALID_ROOM');
    // Act
    assert.equal((await sendMessage(a, 'user_status', { status: 'busy' })).ok, true);
    // Assert
    assert.equal((await b.inbox.next('user_status')).status, 'busy');
  });

  for (const [what, payload, code] of [
    ['an invalid room id', { roomId: 'no spaces' }, 'INVALID_ROOM'],
    ['a missing roomId', {}, 'INVALID_ROOM'],
    ['a number roomId', { roomId: 1 }, 'INVALID_ROOM'],
    ['a string payload', 'general', 'INVALID_PAYLOAD'],
  ]) {
    test(`leave_room with ${what} is refused with ${code}`, async () => {
      // Arrange
      const socket = await user();
      // Act + Assert
      await expectFailure(socket, 'leave_room', payload, code);
    });
  }
});
