// PROTOCOL.md §5 (`message` and its types, acks, wrong shapes), §6 (payload shapes) and the §11
// details on acks, message length and unknown types.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  RFC3339_UTC,
  ack,
  assertErrorEvent,
  chat,
  expectFailure,
  joinRoom,
  openRawWebSocket,
  sendMessage,
  startServer,
  uid,
} from './helpers.mjs';

const MAX_LEN = 10;
let server;
before(async () => {
  server = await startServer({ MAX_MESSAGE_LENGTH: MAX_LEN });
});
afterEach(() => server.closeClients());
after(() => server.stop());

/** Two connected users of one fresh tenant, both in a fresh room. */
async function pairInRoom(claimsA = {}, claimsB = {}) {
  const tenantId = uid('t');
  const roomId = uid('room');
  const a = await server.connect(server.token({ tenantId, ...claimsA }));
  const b = await server.connect(server.token({ tenantId, ...claimsB }));
  await joinRoom(a, roomId);
  await joinRoom(b, roomId);
  return { a, b, roomId, tenantId };
}

const send = (roomId, message) => ({ type: 'send_message', data: { roomId, message } });

describe('send_message', () => {
  test('send_message is acked with { ok: true, id, seq }', async () => {
    // Arrange
    const { a, roomId } = await pairInRoom();
    // Act
    const res = await sendMessage(a, 'send_message', { roomId, message: 'hello' });
    // Assert
    assert.deepEqual(Object.keys(res).sort(), ['id', 'ok', 'seq']);
    assert.equal(res.ok, true);
    assert.equal(typeof res.id, 'string');
    assert.ok(res.id.length > 0);
    assert.ok(Number.isInteger(res.seq) && res.seq > 0, `seq ${res.seq}`);
  });

  test('chat_message reaches every member of the room, the sender included, with the contract shape', async () => {
    // Arrange
    const { a, b, roomId } = await pairInRoom({ name: 'Alice' });
    // Act
    const res = await chat(a, roomId, 'hello room');
    // Assert
    for (const socket of [a, b]) {
      const m = await socket.inbox.next('chat_message');
      assert.deepEqual(Object.keys(m).sort(), ['id', 'message', 'roomId', 'seq', 'timestamp', 'userId', 'userName']);
      assert.equal(m.id, res.id);
      assert.equal(m.seq, res.seq);
      assert.equal(m.roomId, roomId);
      assert.equal(m.userId, a.connectedPayload.userId);
      assert.equal(m.userName, 'Alice');
      assert.equal(m.message, 'hello room');
      assert.match(m.timestamp, RFC3339_UTC);
    }
  });

  test('chat_message also works without an ack callback (blueprint style)', async () => {
    // Arrange
    const { a, b, roomId } = await pairInRoom();
    // Act
    a.emit('message', send(roomId, 'Hello!'));
    // Assert
    assert.equal((await b.inbox.next('chat_message')).message, 'Hello!');
  });

  test('userName falls back to the email claim, then to sub', async () => {
    // Arrange
    const { a, b, roomId } = await pairInRoom({ name: undefined, email: 'a@example.com' }, { name: undefined });
    // Act
    await chat(a, roomId, 'from a');
    await chat(b, roomId, 'from b');
    // Assert
    assert.equal((await b.inbox.next('chat_message', (m) => m.message === 'from a')).userName, 'a@example.com');
    assert.equal((await b.inbox.next('chat_message', (m) => m.message === 'from b')).userName, b.connectedPayload.userId);
  });

  test('seq strictly increases within a room', async () => {
    // Arrange
    const { a, b, roomId } = await pairInRoom();
    // Act
    const seqs = [];
    for (const text of ['1', '2', '3', '4']) seqs.push((await chat(text === '3' ? b : a, roomId, text)).seq);
    // Assert
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `seqs ${seqs}`);
  });

  test('20 messages emitted without awaiting are handled in send order', async () => {
    // Arrange
    const { a, b, roomId } = await pairInRoom();
    // Act
    const acks = await Promise.all(Array.from({ length: 20 }, (_, i) => sendMessage(a, 'send_message', { roomId, message: `m${i}` })));
    // Assert
    acks.forEach((r) => assert.equal(r.ok, true));
    for (let i = 1; i < acks.length; i++) assert.ok(acks[i].seq > acks[i - 1].seq, `seqs ${acks.map((r) => r.seq)}`);
    const last = acks.at(-1);
    await b.inbox.next('chat_message', (m) => m.id === last.id);
    assert.deepEqual(
      b.inbox.all('chat_message').map((m) => m.message),
      Array.from({ length: 20 }, (_, i) => `m${i}`),
    );
  });

  test('send_message to a room the socket did not join is refused with NOT_IN_ROOM', async () => {
    // Arrange
    const socket = await server.connect(server.token({ tenantId: uid('t') }));
    // Act + Assert
    await expectFailure(socket, 'message', send(uid('room'), 'x'), 'NOT_IN_ROOM', 'Not in room');
  });

  test('the own user room does not count as joined for send_message', async () => {
    // Arrange
    const socket = await server.connect(server.token({ tenantId: uid('t') }));
    // Act + Assert
    await expectFailure(socket, 'message', send(`user:${socket.connectedPayload.userId}`, 'x'), 'NOT_IN_ROOM');
  });

  test('the own tenant room does not count as joined for send_message', async () => {
    // Arrange
    const tenantId = uid('t');
    const socket = await server.connect(server.token({ tenantId }));
    // Act + Assert
    await expectFailure(socket, 'message', send(`tenant:${tenantId}`, 'x'), 'NOT_IN_ROOM');
  });

  test('a message of exactly MAX_MESSAGE_LENGTH emoji is accepted (length counts Unicode chars)', async () => {
    // Arrange
    const { a, b, roomId } = await pairInRoom();
    const text = '\u{1F600}'.repeat(MAX_LEN); // 2 UTF-16 units and 4 UTF-8 bytes each
    // Act
    const res = await sendMessage(a, 'send_message', { roomId, message: text });
    // Assert
    assert.equal(res.ok, true, JSON.stringify(res));
    assert.equal((await b.inbox.next('chat_message')).message, text);
  });

  test('any Unicode text round-trips exactly, live and replayed', async () => {
    // Arrange
    const { a, b, roomId, tenantId } = await pairInRoom();
    const texts = ['\u{1F680}\u05E9\u4E2D"\\', 'a\u0001b\nc\u007f', '\u200D\uFEFF\u{10FFFF}', "</x>'&;"];
    // Act
    const acks = [];
    for (const t of texts) acks.push(await chat(a, roomId, t));
    const late = await server.connect(server.token({ tenantId }));
    await joinRoom(late, roomId, { since: 0 });
    // Assert
    await b.inbox.next('chat_message', (m) => m.id === acks.at(-1).id);
    await late.inbox.next('chat_message', (m) => m.id === acks.at(-1).id);
    assert.deepEqual(b.inbox.all('chat_message').map((m) => m.message), texts);
    assert.deepEqual(late.inbox.all('chat_message').map((m) => m.message), texts);
  });

  test('a message holding a NUL character is refused with INVALID_PAYLOAD (no store could keep it) and not delivered', async () => {
    // Arrange
    const { a, b, roomId } = await pairInRoom();
    // Act
    const err = await expectFailure(a, 'message', send(roomId, 'a\u0000b'), 'INVALID_PAYLOAD');
    const after = await chat(a, roomId, 'after');
    // Assert
    assert.match(err.message, /NUL/);
    await b.inbox.next('chat_message', (m) => m.id === after.id);
    assert.deepEqual(b.inbox.all('chat_message').map((m) => m.message), ['after']);
  });

  test('a message one char over MAX_MESSAGE_LENGTH is refused with INVALID_PAYLOAD', async () => {
    // Arrange
    const { a, roomId } = await pairInRoom();
    // Act + Assert
    await expectFailure(a, 'message', send(roomId, '\u{1F600}'.repeat(MAX_LEN + 1)), 'INVALID_PAYLOAD');
  });

  test('a combining sequence counts each scalar value (é as e + U+0301 is two chars)', async () => {
    // Arrange
    const { a, roomId } = await pairInRoom();
    const text = 'e\u0301'.repeat(MAX_LEN / 2);
    // Act + Assert
    assert.equal((await sendMessage(a, 'send_message', { roomId, message: text })).ok, true);
    await expectFailure(a, 'message', send(roomId, text + 'e\u0301'), 'INVALID_PAYLOAD');
  });

  test('an empty message is refused with INVALID_PAYLOAD', async () => {
    // Arrange
    const { a, roomId } = await pairInRoom();
    // Act + Assert
    await expectFailure(a, 'message', send(roomId, ''), 'INVALID_PAYLOAD');
  });

  test('refused messages are neither delivered nor stored', async () => {
    // Arrange
    const { a, b, roomId, tenantId } = await pairInRoom();
    await expectFailure(a, 'message', send(roomId, ''), 'INVALID_PAYLOAD');
    await expectFailure(a, 'message', send(roomId, 'x'.repeat(MAX_LEN + 1)), 'INVALID_PAYLOAD');
    await expectFailure(a, 'message', send(roomId, 42), 'INVALID_PAYLOAD');
    const ok = await chat(a, roomId, 'valid');
    await b.inbox.next('chat_message', (m) => m.id === ok.id);
    // Act: a late member replays the whole room
    const late = await server.connect(server.token({ tenantId }));
    await joinRoom(late, roomId, { since: 0 });
    await late.inbox.next('chat_message', (m) => m.id === ok.id);
    // Assert
    assert.deepEqual(b.inbox.all('chat_message').map((m) => m.message), ['valid']);
    assert.deepEqual(late.inbox.all('chat_message').map((m) => m.message), ['valid']);
  });

  for (const [what, data] of [
    ['a number message', (roomId) => ({ roomId, message: 5 })],
    ['a missing message', (roomId) => ({ roomId })],
    ['an object message', (roomId) => ({ roomId, message: { text: 'x' } })],
    ['data that is a string', () => 'hello'],
    ['data that is null', () => null],
    ['data that is missing', () => undefined],
  ]) {
    test(`send_message with ${what} is refused with INVALID_PAYLOAD`, async () => {
      // Arrange
      const { a, roomId } = await pairInRoom();
      // Act + Assert
      await expectFailure(a, 'message', { type: 'send_message', data: data(roomId) }, 'INVALID_PAYLOAD');
    });
  }

  test('send_message with a missing roomId is refused', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    // Act
    const res = await sendMessage(socket, 'send_message', { message: 'x' });
    // Assert: a wrong shape (INVALID_PAYLOAD) or a bad room (INVALID_ROOM), answered both ways
    assert.equal(res.ok, false);
    assert.ok(['INVALID_PAYLOAD', 'INVALID_ROOM'].includes(res.error.code), res.error.code);
    assertErrorEvent(await socket.inbox.next('error'), res.error.code);
  });
});

describe('typing', () => {
  test('typing_start sends user_typing { userId, roomId, typing: true } to the room', async () => {
    // Arrange
    const { a, b, roomId } = await pairInRoom();
    // Act
    const res = await sendMessage(a, 'typing_start', { roomId });
    // Assert
    assert.equal(res.ok, true);
    assert.deepEqual(await b.inbox.next('user_typing'), { userId: a.connectedPayload.userId, roomId, typing: true });
  });

  test('typing_stop sends user_typing with typing: false', async () => {
    // Arrange
    const { a, b, roomId } = await pairInRoom();
    // Act
    await sendMessage(a, 'typing_stop', { roomId });
    // Assert
    assert.deepEqual(await b.inbox.next('user_typing'), { userId: a.connectedPayload.userId, roomId, typing: false });
  });

  test('typing is not stored: a later join with since replays no typing', async () => {
    // Arrange
    const { a, roomId, tenantId } = await pairInRoom();
    await sendMessage(a, 'typing_start', { roomId });
    const m = await chat(a, roomId, 'after');
    const late = await server.connect(server.token({ tenantId }));
    // Act
    await joinRoom(late, roomId, { since: 0 });
    // Assert
    await late.inbox.next('chat_message', (x) => x.id === m.id);
    assert.deepEqual(late.inbox.all('user_typing'), []);
    assert.deepEqual(late.inbox.all('chat_message').map((x) => x.message), ['after']);
  });

  test('typing in a room the socket did not join is refused with NOT_IN_ROOM', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    // Act + Assert
    await expectFailure(socket, 'message', { type: 'typing_start', data: { roomId: uid('room') } }, 'NOT_IN_ROOM');
    await expectFailure(socket, 'message', { type: 'typing_stop', data: { roomId: uid('room') } }, 'NOT_IN_ROOM');
  });

  test('typing with data that is not an object is refused with INVALID_PAYLOAD', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    // Act + Assert
    await expectFailure(socket, 'message', { type: 'typing_start', data: 'room' }, 'INVALID_PAYLOAD');
  });
});

describe('user_status', () => {
  for (const status of ['online', 'away', 'busy', 'offline']) {
    test(`user_status "${status}" is sent to the tenant as user_status { userId, status, timestamp }`, async () => {
      // Arrange
      const { a, b } = await pairInRoom();
      // Act
      const res = await sendMessage(a, 'user_status', { status });
      // Assert
      assert.equal(res.ok, true);
      const got = await b.inbox.next('user_status', (d) => d.userId === a.connectedPayload.userId && d.status === status);
      assert.deepEqual(Object.keys(got).sort(), ['status', 'timestamp', 'userId']);
      assert.match(got.timestamp, RFC3339_UTC);
    });
  }

  test('user_status does not reach another tenant', async () => {
    // Arrange
    const a = await server.connect(server.token({ tenantId: uid('tA') }));
    const otherTenant = uid('tB');
    const outsider = await server.connect(server.token({ tenantId: otherTenant }));
    // Act
    await sendMessage(a, 'user_status', { status: 'busy' });
    // Barrier: the outsider's own status, published after a's
    await sendMessage(outsider, 'user_status', { status: 'away' });
    await outsider.inbox.next('user_status', (d) => d.status === 'away');
    // Assert
    assert.deepEqual(outsider.inbox.all('user_status', (d) => d.userId === a.connectedPayload.userId), []);
  });

  for (const [what, data] of [
    ['an unknown status', { status: 'sleeping' }],
    ['an upper-case status', { status: 'AWAY' }],
    ['a non-string status', { status: 1 }],
    ['a missing status', {}],
  ]) {
    test(`user_status with ${what} is refused with INVALID_PAYLOAD`, async () => {
      // Arrange
      const socket = await server.connect(server.token({ tenantId: uid('t') }));
      // Act + Assert
      await expectFailure(socket, 'message', { type: 'user_status', data }, 'INVALID_PAYLOAD');
    });
  }
});

describe('unknown and malformed message types', () => {
  test('an unknown type gets UNKNOWN_EVENT in the ack and no error event', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    // Act
    const res = await sendMessage(socket, 'dance', {});
    // Assert: an error event would have been emitted before the ack
    assert.deepEqual(res, { ok: false, error: { code: 'UNKNOWN_EVENT', message: 'Unknown event type: dance' } });
    assert.deepEqual(socket.inbox.all('error'), []);
  });

  test('the empty string type is an unknown type', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    // Act
    const res = await sendMessage(socket, '', {});
    // Assert
    assert.deepEqual(res, { ok: false, error: { code: 'UNKNOWN_EVENT', message: 'Unknown event type: ' } });
    assert.deepEqual(socket.inbox.all('error'), []);
  });

  test('an unknown type without an ack callback raises no error event', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    // Act
    socket.emit('message', { type: 'test', data: {} });
    // Barrier: a failing event after it; its error must be the first one
    await expectFailure(socket, 'message', { data: {} }, 'INVALID_PAYLOAD');
    // Assert
    assert.deepEqual(socket.inbox.all('error').map((e) => e.code), ['INVALID_PAYLOAD']);
  });

  for (const [what, payload] of [
    ['a missing type', { data: { roomId: 'r' } }],
    ['a number type', { type: 5, data: {} }],
    ['a null type', { type: null, data: {} }],
    ['an object type', { type: { name: 'send_message' }, data: {} }],
  ]) {
    test(`a message with ${what} is refused with INVALID_PAYLOAD`, async () => {
      // Arrange
      const socket = await server.connect(server.token());
      // Act + Assert
      await expectFailure(socket, 'message', payload, 'INVALID_PAYLOAD');
    });
  }

  for (const [what, payload] of [
    ['null', null],
    ['a number', 42],
    ['an array', [{ type: 'send_message' }]],
    ['a string', 'send_message'],
    ['a boolean', false],
  ]) {
    test(`a message whose payload is ${what} is refused with INVALID_PAYLOAD and the socket stays up`, async () => {
      // Arrange
      const { a, b, roomId } = await pairInRoom();
      // Act
      await expectFailure(a, 'message', payload, 'INVALID_PAYLOAD');
      // Assert: a is still connected and served; b is unaffected
      assert.equal(a.connected, true);
      const res = await chat(a, roomId, 'still here');
      assert.equal((await b.inbox.next('chat_message', (m) => m.id === res.id)).message, 'still here');
    });
  }

  test('a message event without any payload is refused with INVALID_PAYLOAD', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    // Act
    const res = await socket.timeout(5000).emitWithAck('message');
    // Assert
    assert.equal(res.ok, false);
    assert.equal(res.error.code, 'INVALID_PAYLOAD');
    assertErrorEvent(await socket.inbox.next('error'), 'INVALID_PAYLOAD');
  });

  test('a payload nested 10000 levels deep is INVALID_PAYLOAD, the socket stays up and others are unaffected', async () => {
    // Arrange: a raw client, since the official encoder is not meant for such depth
    const { a: bystander, b: peer, roomId } = await pairInRoom();
    const raw = await openRawWebSocket(server.url);
    raw.ws.send(`40/ws,${JSON.stringify({ token: server.token() })}`);
    await raw.next((m) => m.startsWith('40/ws,'));
    await raw.next((m) => m.startsWith('42/ws,') && m.includes('"connected"'));
    const nested = '['.repeat(10000) + ']'.repeat(10000);
    // Act
    raw.ws.send(`42/ws,7["message",{"type":"send_message","data":${nested}}]`);
    // Assert: the ack (id 7) is INVALID_PAYLOAD, and an error event came too
    const ackPacket = await raw.next((m) => m.startsWith('43/ws,7'));
    const [answer] = JSON.parse(ackPacket.slice('43/ws,7'.length));
    assert.equal(answer.ok, false);
    assert.equal(answer.error.code, 'INVALID_PAYLOAD');
    const errPacket = await raw.next((m) => m.startsWith('42/ws,["error"'));
    assertErrorEvent(JSON.parse(errPacket.slice(6))[1], 'INVALID_PAYLOAD');
    // Still served: an unknown type gets its ack
    raw.ws.send('42/ws,8["message",{"type":"ping-check","data":{}}]');
    const ack8 = JSON.parse((await raw.next((m) => m.startsWith('43/ws,8'))).slice('43/ws,8'.length))[0];
    assert.equal(ack8.error.code, 'UNKNOWN_EVENT');
    // Others unaffected
    const res = await chat(bystander, roomId, 'unaffected');
    assert.equal((await peer.inbox.next('chat_message', (m) => m.id === res.id)).message, 'unaffected');
    raw.ws.close();
  });

  test('a deeply nested object inside send_message data is INVALID_PAYLOAD and the socket stays up', async () => {
    // Arrange
    const raw = await openRawWebSocket(server.url);
    raw.ws.send(`40/ws,${JSON.stringify({ token: server.token() })}`);
    await raw.next((m) => m.startsWith('40/ws,'));
    const nested = '{"a":'.repeat(5000) + '1' + '}'.repeat(5000);
    // Act
    raw.ws.send(`42/ws,3["message",{"type":"send_message","data":{"roomId":"r","message":${nested}}}]`);
    // Assert
    const answer = JSON.parse((await raw.next((m) => m.startsWith('43/ws,3'))).slice('43/ws,3'.length))[0];
    assert.equal(answer.error.code, 'INVALID_PAYLOAD');
    raw.ws.send('42/ws,4["join_room",{"roomId":"still-up"}]');
    const ack4 = JSON.parse((await raw.next((m) => m.startsWith('43/ws,4'))).slice('43/ws,4'.length))[0];
    assert.deepEqual(ack4, { ok: true, roomId: 'still-up' });
    raw.ws.close();
  });

  test('an event name nobody handles gets a failed ack and the socket stays up', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    // Act
    const res = await ack(socket, 'no_such_event', { x: 1 });
    // Assert
    assert.equal(res.ok, false);
    assert.equal(typeof res.error.code, 'string');
    const again = await sendMessage(socket, 'dance', {});
    assert.equal(again.error.code, 'UNKNOWN_EVENT');
  });
});

describe('error events', () => {
  test('every failure answered by an ack is also an error event { type, code, message, timestamp }', async () => {
    // Arrange
    const socket = await server.connect(server.token({ tenantId: uid('t') }));
    const cases = [
      ['join_room', { roomId: 'bad room' }, 'INVALID_ROOM'],
      ['join_room', 'x', 'INVALID_PAYLOAD'],
      ['join_room', { roomId: `user:${uid('x')}` }, 'ACCESS_DENIED'],
      ['leave_room', { roomId: `user:${socket.connectedPayload.userId}` }, 'INVALID_ROOM'],
      ['message', send(uid('r'), 'x'), 'NOT_IN_ROOM'],
      ['message', { type: 'user_status', data: { status: 'nope' } }, 'INVALID_PAYLOAD'],
      ['message', { type: 'mark_notification_read', data: { notificationId: uid('n') } }, 'NOT_FOUND'],
      ['refresh_token', { token: 'garbage' }, 'INVALID_TOKEN'],
    ];
    for (const [event, payload, code] of cases) {
      // Act + Assert
      await expectFailure(socket, event, payload, code);
    }
    // Assert: exactly one error event per failure, in order
    assert.deepEqual(socket.inbox.all('error').map((e) => e.code), cases.map((c) => c[2]));
  });

  test('failed events without an ack callback still get the error event', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    // Act
    socket.emit('join_room', { roomId: '' });
    // Assert
    assertErrorEvent(await socket.inbox.next('error'), 'INVALID_ROOM');
  });
});
