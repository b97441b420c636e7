// The per-connection event budget (EVENTS_PER_SECOND_PER_CONNECTION with
// EVENT_BURST_PER_CONNECTION: every client event but `message`, which has RATE_LIMIT_PER_MINUTE;
// MAX_EVENTS_IN_FLIGHT: every event) and the replay budget
// (REPLAY_MESSAGES_PER_SECOND_PER_CONNECTION with REPLAY_BURST_PER_CONNECTION): checked before
// the event waits in line; over it the event is answered RATE_LIMITED (error event and ack)
// while the socket stays up, and over the rate its websocket is not read again until the budget
// has a token.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ack, chat, expectFailure, joinRoom, request, sendMessage, startServer, uid } from './helpers.mjs';

const BURST = 3;
let burst; // 3 events at once, then 1 a second
let inFlight; // at most 2 unanswered events
let replays; // 1 replayed message a second, 4 at once
let held; // 50 events a second, 5 at once
before(async () => {
  [burst, inFlight, replays, held] = await Promise.all([
    // The message rate limit is far away: the budget is its own thing.
    startServer({ EVENTS_PER_SECOND_PER_CONNECTION: 1, EVENT_BURST_PER_CONNECTION: BURST, RATE_LIMIT_PER_MINUTE: 100000 }),
    startServer({ MAX_EVENTS_IN_FLIGHT: 2 }),
    startServer({ REPLAY_MESSAGES_PER_SECOND_PER_CONNECTION: 1, REPLAY_BURST_PER_CONNECTION: 4 }),
    startServer({ EVENTS_PER_SECOND_PER_CONNECTION: 50, EVENT_BURST_PER_CONNECTION: 5 }),
  ]);
});
afterEach(() => [burst, inFlight, replays, held].forEach((s) => s.closeClients()));
after(() => Promise.all([burst.stop(), inFlight.stop(), replays.stop(), held.stop()]));

describe('event budget per connection', () => {
  test('the event after the burst is refused with RATE_LIMITED, whatever its kind, and the socket stays up', async () => {
    // Arrange
    const sub = uid('u');
    const tenantId = uid('t');
    const socket = await burst.connect(burst.token({ sub, tenantId }));
    // Act: join_room, refresh_token and leave_room spend the burst
    await joinRoom(socket, uid('room'));
    assert.equal((await ack(socket, 'refresh_token', { token: burst.token({ sub, tenantId }) })).ok, true);
    assert.equal((await ack(socket, 'leave_room', { roomId: uid('room') })).ok, true);
    const err = await expectFailure(socket, 'join_room', { roomId: uid('room') }, 'RATE_LIMITED');
    // Assert
    assert.equal(err.message, 'Too many events, slow down');
    assert.equal(socket.connected, true);
  });

  test('the budget is per connection: another connection of the same user has its own', async () => {
    // Arrange
    const token = burst.token({ tenantId: uid('t') });
    const a = await burst.connect(token);
    const b = await burst.connect(token);
    for (let i = 0; i < BURST; i++) await ack(a, 'join_room', { roomId: uid('room') });
    await expectFailure(a, 'join_room', { roomId: uid('room') }, 'RATE_LIMITED');
    // Act + Assert
    await joinRoom(b, uid('room'));
  });

  test('the budget refills: after a refused event, a later one is served', async () => {
    // Arrange
    const socket = await burst.connect(burst.token({ tenantId: uid('t') }));
    for (let i = 0; i < BURST; i++) await ack(socket, 'join_room', { roomId: uid('room') });
    await expectFailure(socket, 'join_room', { roomId: uid('room') }, 'RATE_LIMITED');
    // Act: at 1 event a second, one is back within about a second
    let res;
    for (let i = 0; i < 40; i++) {
      res = await ack(socket, 'join_room', { roomId: uid('room') });
      if (res.ok) break;
      await socket.inbox.next('error', (e) => e.code === 'RATE_LIMITED');
      await new Promise((r) => setTimeout(r, 100));
    }
    // Assert
    assert.equal(res.ok, true, JSON.stringify(res));
  });

  test('message events are not in this budget (they have RATE_LIMIT_PER_MINUTE): chat goes on past the burst', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const socket = await burst.connect(burst.token({ tenantId }));
    await joinRoom(socket, roomId);
    for (let i = 1; i < BURST; i++) await ack(socket, 'join_room', { roomId: uid('room') });
    await expectFailure(socket, 'join_room', { roomId: uid('room') }, 'RATE_LIMITED');
    // Act: the event budget is spent, chat is not in it
    const acks = await Promise.all(Array.from({ length: BURST * 3 }, (_, i) => sendMessage(socket, 'send_message', { roomId, message: `m${i}` })));
    // Assert
    assert.deepEqual(acks.map((a) => a.ok), acks.map(() => true), JSON.stringify(acks));
  });

  test('after a refusal the socket is not read until the budget refills: of 40 events sent at once past the burst, about half are served, not none', async () => {
    // Arrange
    const socket = await held.connect(held.token({ tenantId: uid('t') }));
    // Act: 45 joins in one go; read as they came, the 40 after the burst would all be refused
    const acks = await Promise.all(Array.from({ length: 45 }, () => ack(socket, 'join_room', { roomId: uid('room') })));
    // Assert: each refusal holds the next read for a token (20 ms), which the next join takes
    const served = acks.filter((a) => a.ok).length;
    const refused = acks.filter((a) => !a.ok);
    assert.ok(served >= 15, `served ${served} of 45`);
    for (const r of refused) assert.equal(r.error.code, 'RATE_LIMITED');
    assert.equal(served + refused.length, 45);
    assert.equal(socket.connected, true);
  });

  test('a refused event is not handled: a refused join_room joins nothing', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const socket = await burst.connect(burst.token({ tenantId }));
    for (let i = 0; i < BURST; i++) await ack(socket, 'join_room', { roomId: uid('room') });
    // Act
    await expectFailure(socket, 'join_room', { roomId }, 'RATE_LIMITED');
    // Assert
    const res = await sendMessage(socket, 'send_message', { roomId, message: 'x' });
    assert.equal(res.error?.code, 'NOT_IN_ROOM', JSON.stringify(res));
  });
});

describe('events in flight per connection', () => {
  test('events sent without waiting beyond MAX_EVENTS_IN_FLIGHT are refused with RATE_LIMITED; the socket stays up', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const sender = await inFlight.connect(inFlight.token({ tenantId }));
    await joinRoom(sender, roomId);
    for (let i = 0; i < 20; i++) await chat(sender, roomId, `m${i}`);
    const socket = await inFlight.connect(inFlight.token({ tenantId }));
    // Act: joins with replay, all sent at once; each waits for the one before it
    const acks = await Promise.all(Array.from({ length: 20 }, () => ack(socket, 'join_room', { roomId, since: 0 })));
    // Assert
    const refused = acks.filter((a) => !a.ok);
    assert.ok(acks[0].ok && acks[1].ok, JSON.stringify(acks.slice(0, 2)));
    assert.ok(refused.length > 0, 'some events were refused');
    for (const r of refused) {
      assert.equal(r.error.code, 'RATE_LIMITED');
      assert.match(r.error.message, /in flight/);
    }
    assert.equal(socket.connected, true);
    await joinRoom(socket, uid('room'));
  });
});

describe('replay budget per connection', () => {
  test('a join with since over the replay budget is refused with RATE_LIMITED; a join without since still works', async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('room');
    const sender = await replays.connect(replays.token({ tenantId }));
    await joinRoom(sender, roomId);
    for (let i = 0; i < 10; i++) await chat(sender, roomId, `m${i}`);
    const socket = await replays.connect(replays.token({ tenantId }));
    // Act: the first replay (10 messages) is allowed and puts the budget in debt
    await joinRoom(socket, roomId, { since: 0 });
    const err = await expectFailure(socket, 'join_room', { roomId, since: 0 }, 'RATE_LIMITED');
    // Assert
    assert.equal(err.message, 'Too many replayed messages, try again later');
    assert.equal(socket.inbox.all('chat_message').length, 10);
    await joinRoom(socket, roomId);
    assert.equal(socket.connected, true);
  });
});

test('the refusals are counted in aegisx_events_refused_total by reason', async () => {
  // Arrange
  const socket = await burst.connect(burst.token({ tenantId: uid('t') }));
  for (let i = 0; i < BURST; i++) await ack(socket, 'join_room', { roomId: uid('room') });
  // Act
  await ack(socket, 'leave_room', { roomId: uid('room') });
  // Assert
  const text = (await request(`${burst.url}/metrics`)).body;
  assert.match(text, /aegisx_events_refused_total\{reason="rate"\} [1-9]/);
});
