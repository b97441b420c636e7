// PROTOCOL.md §5 rate limit and its §11 details: RATE_LIMIT_PER_MINUTE `message` events per user
// per rolling minute, across the user's connections; over it: dropped, `error` RATE_LIMITED.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { assertErrorEvent, chat, expectFailure, joinRoom, sendMessage, startServer, uid } from './helpers.mjs';

const LIMIT = 5;
let server;
let defaults; // RATE_LIMIT_PER_MINUTE left at its default (60)
before(async () => {
  [server, defaults] = await Promise.all([
    startServer({ RATE_LIMIT_PER_MINUTE: LIMIT }),
    startServer({ RATE_LIMIT_PER_MINUTE: undefined }),
  ]);
});
afterEach(() => {
  server.closeClients();
  defaults.closeClients();
});
after(() => Promise.all([server.stop(), defaults.stop()]));

const unknown = (socket) => sendMessage(socket, 'not-a-type', {});
const RATE_LIMITED = ['message', { type: 'not-a-type', data: {} }, 'RATE_LIMITED', 'Rate limit exceeded'];

describe('rate limit', () => {
  test('the event after RATE_LIMIT_PER_MINUTE message events is refused with RATE_LIMITED and the connection stays up', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    for (let i = 0; i < LIMIT; i++) assert.equal((await unknown(socket)).error.code, 'UNKNOWN_EVENT');
    // Act + Assert
    await expectFailure(socket, ...RATE_LIMITED);
    assert.equal(socket.connected, true);
    await joinRoom(socket, uid('room')); // join_room is not a message event: still served
    assert.equal(socket.connected, true);
  });

  test('events within the limit are served normally', async () => {
    // Arrange
    const socket = await server.connect(server.token({ tenantId: uid('t') }));
    const roomId = uid('room');
    await joinRoom(socket, roomId);
    // Act
    const results = [];
    for (let i = 0; i < LIMIT; i++) results.push(await sendMessage(socket, 'send_message', { roomId, message: `m${i}` }));
    // Assert
    assert.deepEqual(results.map((r) => r.ok), Array(LIMIT).fill(true));
  });

  test('unknown types count towards the limit', async () => {
    // Arrange
    const socket = await server.connect(server.token({ tenantId: uid('t') }));
    for (let i = 0; i < LIMIT; i++) await unknown(socket);
    // Act + Assert: a valid event is now refused
    await expectFailure(socket, 'message', { type: 'user_status', data: { status: 'away' } }, 'RATE_LIMITED', 'Rate limit exceeded');
  });

  test('wrong shapes count towards the limit', async () => {
    // Arrange
    const socket = await server.connect(server.token());
    for (let i = 0; i < LIMIT; i++) await expectFailure(socket, 'message', 'garbage', 'INVALID_PAYLOAD');
    // Act + Assert
    await expectFailure(socket, ...RATE_LIMITED);
  });

  test('two connections of one user share the budget', async () => {
    // Arrange
    const token = server.token();
    const a = await server.connect(token);
    const b = await server.connect(token);
    for (let i = 0; i < 3; i++) await unknown(a);
    for (let i = 0; i < LIMIT - 3; i++) await unknown(b);
    // Act + Assert
    await expectFailure(a, ...RATE_LIMITED);
    await expectFailure(b, ...RATE_LIMITED);
  });

  test('the budget is per user: another user is not limited', async () => {
    // Arrange
    const limited = await server.connect(server.token());
    for (let i = 0; i < LIMIT; i++) await unknown(limited);
    await expectFailure(limited, ...RATE_LIMITED);
    const other = await server.connect(server.token());
    // Act
    const res = await unknown(other);
    // Assert
    assert.equal(res.error.code, 'UNKNOWN_EVENT');
  });

  test('the budget survives a reconnect of the user', async () => {
    // Arrange
    const token = server.token();
    const first = await server.connect(token);
    for (let i = 0; i < LIMIT; i++) await unknown(first);
    first.close();
    // Act
    const second = await server.connect(token);
    // Assert
    await expectFailure(second, ...RATE_LIMITED);
  });

  test('a rate-limited send_message is dropped: not delivered and not stored', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const sender = await server.connect(server.token({ tenantId }));
    const peer = await server.connect(server.token({ tenantId }));
    await joinRoom(sender, roomId);
    await joinRoom(peer, roomId);
    const sent = [];
    for (let i = 0; i < LIMIT; i++) sent.push(await chat(sender, roomId, `ok${i}`));
    // Act
    await expectFailure(sender, 'message', { type: 'send_message', data: { roomId, message: 'dropped' } }, 'RATE_LIMITED');
    const late = await server.connect(server.token({ tenantId }));
    await joinRoom(late, roomId, { since: 0 });
    await late.inbox.next('chat_message', (m) => m.id === sent.at(-1).id);
    // Assert
    await peer.inbox.next('chat_message', (m) => m.id === sent.at(-1).id);
    assert.deepEqual(peer.inbox.all('chat_message').map((m) => m.message), sent.map((_, i) => `ok${i}`));
    assert.deepEqual(late.inbox.all('chat_message').map((m) => m.message), sent.map((_, i) => `ok${i}`));
  });

  test('the blueprint test: 65 unknown messages at the default limit make the first error "Rate limit exceeded"', async () => {
    // Arrange
    const socket = await defaults.connect(defaults.token({ sub: uid('test-user'), email: 'test@example.com' }));
    // Act
    for (let i = 0; i < 65; i++) socket.emit('message', { type: 'test', data: {} });
    // Assert
    const first = await socket.inbox.next('error');
    assert.equal(first.message, 'Rate limit exceeded');
    assertErrorEvent(first, 'RATE_LIMITED', 'Rate limit exceeded');
    const unknownErrors = socket.inbox.all('error').filter((e) => e.code !== 'RATE_LIMITED');
    assert.deepEqual(unknownErrors, []);
  });

  test('at the default limit the 61st message event is the first refused', async () => {
    // Arrange
    const socket = await defaults.connect(defaults.token());
    // Act
    const results = await Promise.all(Array.from({ length: 61 }, () => unknown(socket)));
    // Assert
    assert.deepEqual(
      results.map((r) => r.error.code),
      [...Array(60).fill('UNKNOWN_EVENT'), 'RATE_LIMITED'],
    );
    assertErrorEvent(await socket.inbox.next('error'), 'RATE_LIMITED', 'Rate limit exceeded');
  });
});
