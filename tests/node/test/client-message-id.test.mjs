// `send_message` with a `clientMessageId`: a resend (same user, room and id, within the window)
// answers the original `{ ok, id, seq }` and is neither stored nor delivered again.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { expectFailure, joinRoom, request, sendMessage, startServer, uid } from './helpers.mjs';

let server;
before(async () => {
  server = await startServer({ API_KEYS: 'k1', CLIENT_MESSAGE_ID_CAPACITY: '50' });
});
after(() => server.stop());

const history = async (tenant, room) =>
  (
    await request(`${server.url}/api/v1/rooms/${room}/messages?tenantId=${tenant}&limit=100`, {
      headers: { authorization: 'Bearer k1' },
    })
  ).json.messages;

async function setup() {
  const tenant = uid('t');
  const room = uid('room');
  const alice = uid('alice');
  const a = await server.connect(server.token({ sub: alice, tenantId: tenant }));
  const watcher = await server.connect(server.token({ sub: uid('bob'), tenantId: tenant }));
  await joinRoom(a, room);
  await joinRoom(watcher, room);
  return { tenant, room, alice, a, watcher };
}

const send = (socket, roomId, message, clientMessageId) =>
  sendMessage(socket, 'send_message', { roomId, message, clientMessageId });

test('a resend returns the original ack and is stored and delivered once', async () => {
  const { tenant, room, a, watcher } = await setup();
  const first = await send(a, room, 'hello', 'c-1');
  assert.equal(first.ok, true);
  const again = await send(a, room, 'hello', 'c-1');
  assert.deepEqual(again, first);
  // A sentinel after the resend: once the watcher has it, anything else would have arrived.
  const sentinel = await send(a, room, 'sentinel', 'c-2');
  assert.ok(sentinel.seq > first.seq);
  await watcher.inbox.next('chat_message', (m) => m.id === sentinel.id);
  const delivered = watcher.inbox.events.filter((e) => e.event === 'chat_message').map((e) => e.data.message);
  assert.deepEqual(delivered, ['hello', 'sentinel']);
  assert.deepEqual((await history(tenant, room)).map((m) => m.message), ['hello', 'sentinel']);
});

test('a resend from a new connection of the same user (after a reconnect) is not stored twice', async () => {
  const { tenant, room, alice, a } = await setup();
  const first = await send(a, room, 'once', 'c-9');
  a.close();
  const b = await server.connect(server.token({ sub: alice, tenantId: tenant }));
  await joinRoom(b, room);
  assert.deepEqual(await send(b, room, 'once', 'c-9'), first);
  assert.equal((await history(tenant, room)).length, 1);
});

test('resends racing the first send all get its ack', async () => {
  const { tenant, room, a } = await setup();
  const acks = await Promise.all([1, 2, 3, 4].map(() => send(a, room, 'burst', 'c-race')));
  for (const r of acks) assert.deepEqual(r, acks[0]);
  assert.equal((await history(tenant, room)).length, 1);
});

test('the id is scoped to the user and the room; without an id nothing is deduplicated', async () => {
  const { tenant, room, a, watcher } = await setup();
  const other = uid('room2');
  await joinRoom(a, other);
  const one = await send(a, room, 'x', 'same');
  const two = await send(watcher, room, 'x', 'same');
  const three = await send(a, other, 'x', 'same');
  assert.notEqual(one.id, two.id);
  assert.notEqual(one.id, three.id);
  await send(a, room, 'plain');
  await send(a, room, 'plain');
  assert.equal((await history(tenant, room)).length, 4);
});

test('a clientMessageId that is not a short string is INVALID_PAYLOAD', async () => {
  const { room, a } = await setup();
  for (const clientMessageId of [5, '', 'x'.repeat(129), { a: 1 }]) {
    await expectFailure(a, 'message', { type: 'send_message', data: { roomId: room, message: 'm', clientMessageId } }, 'INVALID_PAYLOAD');
  }
});

test('memory is bounded: beyond CLIENT_MESSAGE_ID_CAPACITY the oldest ids are forgotten', async () => {
  const { tenant, room, a } = await setup();
  const first = await send(a, room, 'old', 'c-old');
  for (let i = 0; i < 60; i++) await send(a, room, `m${i}`, `c-${i}`);
  const resent = await send(a, room, 'old', 'c-old');
  assert.notEqual(resent.id, first.id, 'a forgotten id is stored as a new message');
  assert.equal((await history(tenant, room)).length, 62);
});
