// PROTOCOL.md §5 `join_room` with `since` and the §11 replay details: joined_room first, then the
// stored messages after `since` in order, then live ones, with no gap and no duplicate; at most
// MAX_REPLAY replayed, flagged `truncated: true`.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ack, chat, disconnected, expectFailure, joinRoom, request, sendMessage, startServer, uid } from './helpers.mjs';

const MAX_REPLAY = 3;
let server;
let capped; // MAX_REPLAY=3
before(async () => {
  [server, capped] = await Promise.all([startServer(), startServer({ MAX_REPLAY, REPLAY_CACHE_PER_ROOM: 0 })]);
});
afterEach(() => {
  server.closeClients();
  capped.closeClients();
});
after(() => Promise.all([server.stop(), capped.stop()]));

/** A sender in a fresh room of a fresh tenant, with `n` messages already stored. */
async function roomWithHistory(srv, n) {
  const tenantId = uid('t');
  const roomId = uid('room');
  const sender = await srv.connect(srv.token({ tenantId }));
  await joinRoom(sender, roomId);
  const acks = [];
  for (let i = 1; i <= n; i++) acks.push(await chat(sender, roomId, `m${i}`));
  return { tenantId, roomId, sender, acks };
}

/** Events of `socket` for `roomId` (joined_room and chat_message) in arrival order. */
const roomEvents = (socket, roomId) =>
  socket.inbox.events
    .filter((e) => (e.event === 'joined_room' || e.event === 'chat_message') && e.data.roomId === roomId)
    .map((e) => (e.event === 'joined_room' ? 'joined' : e.data.message));

describe('join_room with since', () => {
  test('since=N replays the stored messages after N in order, after joined_room and before live ones', async () => {
    // Arrange
    const { tenantId, roomId, sender, acks } = await roomWithHistory(server, 5);
    const joiner = await server.connect(server.token({ tenantId }));
    // Act
    const res = await ack(joiner, 'join_room', { roomId, since: acks[1].seq });
    const live = await chat(sender, roomId, 'live');
    // Assert
    assert.deepEqual(res, { ok: true, roomId });
    await joiner.inbox.next('chat_message', (m) => m.id === live.id);
    assert.deepEqual(roomEvents(joiner, roomId), ['joined', 'm3', 'm4', 'm5', 'live']);
    const replayed = joiner.inbox.all('chat_message').slice(0, 3);
    assert.deepEqual(replayed.map((m) => [m.id, m.seq]), acks.slice(2).map((a) => [a.id, a.seq]));
  });

  test('replayed messages have the chat_message shape', async () => {
    // Arrange
    const { tenantId, roomId, sender, acks } = await roomWithHistory(server, 1);
    const joiner = await server.connect(server.token({ tenantId }));
    // Act
    await joinRoom(joiner, roomId, { since: 0 });
    // Assert
    const m = await joiner.inbox.next('chat_message');
    assert.deepEqual(Object.keys(m).sort(), ['id', 'message', 'roomId', 'seq', 'timestamp', 'userId', 'userName']);
    assert.equal(m.id, acks[0].id);
    assert.equal(m.seq, acks[0].seq);
    assert.equal(m.roomId, roomId);
    assert.equal(m.userId, sender.connectedPayload.userId);
    assert.equal(m.message, 'm1');
  });

  test('since=0 replays the whole room', async () => {
    // Arrange
    const { tenantId, roomId, acks } = await roomWithHistory(server, 4);
    const joiner = await server.connect(server.token({ tenantId }));
    // Act
    await joinRoom(joiner, roomId, { since: 0 });
    // Assert
    await joiner.inbox.next('chat_message', (m) => m.id === acks[3].id);
    assert.deepEqual(roomEvents(joiner, roomId), ['joined', 'm1', 'm2', 'm3', 'm4']);
  });

  test('since at the latest seq replays nothing and live messages follow', async () => {
    // Arrange
    const { tenantId, roomId, sender, acks } = await roomWithHistory(server, 3);
    const joiner = await server.connect(server.token({ tenantId }));
    // Act
    await joinRoom(joiner, roomId, { since: acks[2].seq });
    const live = await chat(sender, roomId, 'live');
    // Assert
    await joiner.inbox.next('chat_message', (m) => m.id === live.id);
    assert.deepEqual(roomEvents(joiner, roomId), ['joined', 'live']);
  });

  test('join_room without since replays nothing', async () => {
    // Arrange
    const { tenantId, roomId, sender } = await roomWithHistory(server, 2);
    const joiner = await server.connect(server.token({ tenantId }));
    // Act
    await joinRoom(joiner, roomId);
    const live = await chat(sender, roomId, 'live');
    // Assert
    await joiner.inbox.next('chat_message', (m) => m.id === live.id);
    assert.deepEqual(roomEvents(joiner, roomId), ['joined', 'live']);
  });

  test('a replay never crosses tenants: the same room name of another tenant replays nothing', async () => {
    // Arrange
    const { roomId } = await roomWithHistory(server, 2);
    const other = await server.connect(server.token({ tenantId: uid('other') }));
    // Act
    await joinRoom(other, roomId, { since: 0 });
    const own = await chat(other, roomId, 'own');
    // Assert
    await other.inbox.next('chat_message', (m) => m.id === own.id);
    assert.deepEqual(roomEvents(other, roomId), ['joined', 'own']);
  });

  test('a socket already in the room that joins again with since gets no duplicate live messages', async () => {
    // Arrange
    const { tenantId, roomId, sender } = await roomWithHistory(server, 0);
    const member = await server.connect(server.token({ tenantId }));
    await joinRoom(member, roomId);
    const first = await chat(sender, roomId, 'first');
    await member.inbox.next('chat_message', (m) => m.id === first.id);
    // Act
    await joinRoom(member, roomId, { since: first.seq });
    const second = await chat(sender, roomId, 'second');
    // Assert
    await member.inbox.next('chat_message', (m) => m.id === second.id);
    assert.deepEqual(member.inbox.all('chat_message').map((m) => m.message), ['first', 'second']);
  });

  test('a member rejoining with since while messages are in flight gets each message once, in order', async () => {
    // Arrange
    const { tenantId, roomId, sender } = await roomWithHistory(server, 0);
    const member = await server.connect(server.token({ tenantId }));
    await joinRoom(member, roomId);
    const pending = Array.from({ length: 60 }, (_, i) => sendMessage(sender, 'send_message', { roomId, message: `f${i}` }, 30000));
    await member.inbox.next('chat_message', (m) => m.message === 'f5', 30000);
    const seen = member.inbox.all('chat_message').at(-1).seq;
    // Act: since below what it already got live, while the rest of the flood is on its way
    await joinRoom(member, roomId, { since: seen - 3 });
    const acks = await Promise.all(pending);
    const end = await chat(sender, roomId, 'end');
    // Assert
    await member.inbox.next('chat_message', (m) => m.id === end.id, 30000);
    const expected = [...acks.map((a) => a.seq), end.seq].sort((x, y) => x - y);
    assert.deepEqual(member.inbox.all('chat_message').map((m) => m.seq), expected, 'a duplicate, gap or disorder');
  });

  test('a member rejoining with since gets the older messages it never had, and none it got live', async () => {
    // Arrange
    const { tenantId, roomId, sender, acks } = await roomWithHistory(server, 2);
    const member = await server.connect(server.token({ tenantId }));
    await joinRoom(member, roomId);
    const live = await chat(sender, roomId, 'live 1');
    await member.inbox.next('chat_message', (m) => m.id === live.id);
    // Act
    await joinRoom(member, roomId, { since: 0 });
    const after = await chat(sender, roomId, 'live 2');
    // Assert
    await member.inbox.next('chat_message', (m) => m.id === after.id);
    assert.deepEqual(member.inbox.all('chat_message').map((m) => m.message), ['live 1', 'm1', 'm2', 'live 2']);
    assert.deepEqual(
      member.inbox.all('chat_message').map((m) => m.seq),
      [live.seq, acks[0].seq, acks[1].seq, after.seq],
    );
  });

  for (const [what, since] of [
    ['a string', 'abc'],
    ['a negative number', -1],
    ['a fraction', 1.5],
    ['an object', { seq: 1 }],
  ]) {
    test(`since that is ${what} is refused with INVALID_PAYLOAD`, async () => {
      // Arrange
      const socket = await server.connect(server.token());
      // Act + Assert
      await expectFailure(socket, 'join_room', { roomId: uid('room'), since }, 'INVALID_PAYLOAD');
    });
  }
});

/** `aegisx_replay_reads_total` by source. */
async function replayReads(srv) {
  const text = (await request(`${srv.url}/metrics`)).body;
  const count = (source) => Number(text.match(new RegExp(`aegisx_replay_reads_total\\{source="${source}"\\} (\\d+)`))?.[1] ?? 0);
  return { recent: count('recent'), cache: count('cache'), store: count('store') };
}

describe('replays from recent messages (REPLAY_CACHE_PER_ROOM)', () => {

  test('clients rejoining with a recent since are answered without a store read, each with exactly its messages', async () => {
    // Arrange: messages delivered live (so the fan-out has them)
    const { tenantId, roomId, sender, acks } = await roomWithHistory(server, 6);
    const before = await replayReads(server);
    const joiners = await Promise.all([0, 1, 2].map(() => server.connect(server.token({ tenantId }))));
    // Act
    await Promise.all(joiners.map((j, i) => joinRoom(j, roomId, { since: acks[i + 2].seq })));
    const live = await chat(sender, roomId, 'live');
    // Assert
    for (const [i, j] of joiners.entries()) {
      await j.inbox.next('chat_message', (m) => m.id === live.id);
      assert.deepEqual(j.inbox.all('chat_message').map((m) => m.seq), [...acks.slice(i + 3).map((a) => a.seq), live.seq]);
    }
    const after = await replayReads(server);
    assert.equal(after.store, before.store, 'no store read');
    assert.equal(after.recent, before.recent + 3);
  });

  test('a since older than the recent messages is read from the store', async () => {
    // Arrange
    const { tenantId, roomId, acks } = await roomWithHistory(capped, 2);
    const before = await replayReads(capped);
    const joiner = await capped.connect(capped.token({ tenantId }));
    // Act: the capped server keeps no recent messages
    await joinRoom(joiner, roomId, { since: 0 });
    // Assert
    await joiner.inbox.next('chat_message', (m) => m.id === acks[1].id);
    assert.equal((await replayReads(capped)).store, before.store + 1);
  });
});

describe('replays from the room\'s last store read', () => {

  test('joins of one room with the same since after a store read are answered from it, each with every message', async () => {
    // Arrange: the capped server keeps no recent messages, so the first join reads the store
    const { tenantId, roomId, sender, acks } = await roomWithHistory(capped, 2);
    const first = await capped.connect(capped.token({ tenantId }));
    const before = await replayReads(capped);
    await joinRoom(first, roomId, { since: 0 });
    const joiners = await Promise.all([0, 1].map(() => capped.connect(capped.token({ tenantId }))));
    // Act
    for (const j of joiners) await joinRoom(j, roomId, { since: 0 });
    const live = await chat(sender, roomId, 'live');
    // Assert
    for (const j of [first, ...joiners]) {
      await j.inbox.next('chat_message', (m) => m.id === live.id);
      assert.deepEqual(roomEvents(j, roomId), ['joined', 'm1', 'm2', 'live']);
      assert.deepEqual(j.inbox.all('chat_message').map((m) => m.seq), [...acks.map((a) => a.seq), live.seq]);
    }
    const after = await replayReads(capped);
    assert.equal(after.store, before.store + 1, 'one store read');
    assert.equal(after.cache, before.cache + 2);
  });

  test('a message stored after the read sends the next join to the store, and it gets that message too', async () => {
    // Arrange
    const { tenantId, roomId, sender } = await roomWithHistory(capped, 2);
    await joinRoom(await capped.connect(capped.token({ tenantId })), roomId, { since: 0 });
    const m3 = await chat(sender, roomId, 'm3');
    const before = await replayReads(capped);
    const joiner = await capped.connect(capped.token({ tenantId }));
    // Act
    await joinRoom(joiner, roomId, { since: 0 });
    const live = await chat(sender, roomId, 'live');
    // Assert
    await joiner.inbox.next('chat_message', (m) => m.id === live.id);
    assert.deepEqual(roomEvents(joiner, roomId), ['joined', 'm1', 'm2', 'm3', 'live']);
    assert.ok(joiner.inbox.all('chat_message').some((m) => m.id === m3.id));
    const after = await replayReads(capped);
    assert.equal(after.store, before.store + 1);
    assert.equal(after.cache, before.cache);
  });
});

describe('MAX_REPLAY', () => {
  test('a replay longer than MAX_REPLAY sends the first MAX_REPLAY messages and joined_room carries truncated: true', async () => {
    // Arrange
    const { tenantId, roomId, sender, acks } = await roomWithHistory(capped, 5);
    const joiner = await capped.connect(capped.token({ tenantId }));
    // Act
    await joinRoom(joiner, roomId, { since: 0 });
    const live = await chat(sender, roomId, 'live');
    // Assert
    assert.deepEqual(await joiner.inbox.next('joined_room'), { roomId, truncated: true });
    await joiner.inbox.next('chat_message', (m) => m.id === live.id);
    assert.deepEqual(roomEvents(joiner, roomId), ['joined', 'm1', 'm2', 'm3', 'live']);
    assert.deepEqual(
      joiner.inbox.all('chat_message').slice(0, 3).map((m) => m.seq),
      acks.slice(0, 3).map((a) => a.seq),
    );
  });

  test('the client continues from the last replayed seq by joining again', async () => {
    // Arrange
    const { tenantId, roomId, acks } = await roomWithHistory(capped, 5);
    const joiner = await capped.connect(capped.token({ tenantId }));
    await joinRoom(joiner, roomId, { since: 0 });
    const firstBatch = [];
    for (let i = 0; i < MAX_REPLAY; i++) firstBatch.push(await joiner.inbox.next('chat_message'));
    // Act
    await joinRoom(joiner, roomId, { since: firstBatch.at(-1).seq });
    // Assert
    await joiner.inbox.next('chat_message', (m) => m.id === acks[4].id);
    assert.deepEqual(joiner.inbox.all('chat_message').map((m) => m.message), ['m1', 'm2', 'm3', 'm4', 'm5']);
    const joined = joiner.inbox.all('joined_room');
    assert.equal(joined.length, 2);
    assert.notEqual(joined[1].truncated, true);
  });

  test('a replay that fits MAX_REPLAY is not flagged truncated', async () => {
    // Arrange
    const { tenantId, roomId, acks } = await roomWithHistory(capped, MAX_REPLAY);
    const joiner = await capped.connect(capped.token({ tenantId }));
    // Act
    await joinRoom(joiner, roomId, { since: 0 });
    // Assert
    const joined = await joiner.inbox.next('joined_room');
    assert.equal(joined.roomId, roomId);
    assert.notEqual(joined.truncated, true);
    await joiner.inbox.next('chat_message', (m) => m.id === acks.at(-1).id);
    assert.equal(joiner.inbox.all('chat_message').length, MAX_REPLAY);
  });
});

describe('replay under load', () => {
  test('joiners with since during a full-speed flood get every seq exactly once, in order, with no gap', { timeout: 60000 }, async () => {
    // Arrange
    const tenantId = uid('t');
    const roomId = uid('flood');
    const ROUNDS = 5;
    const PER_ROUND = 30; // per sender and round
    const senders = await Promise.all([0, 1, 2].map(() => server.connect(server.token({ tenantId }))));
    for (const s of senders) await joinRoom(s, roomId);
    const observer = senders[0];
    const joiners = await Promise.all(Array.from({ length: ROUNDS }, () => server.connect(server.token({ tenantId }))));
    const seed = await chat(senders[0], roomId, 'seed');
    await observer.inbox.next('chat_message', (m) => m.id === seed.id);
    const acks = [seed];
    const pending = [];
    const joins = [];
    const joinedSince = [];
    // Act: each round, every sender emits its messages without waiting; once the flood is
    // visibly under way, a joiner joins with since = a seq seen shortly before (so its replay
    // and the live flow overlap).
    for (let r = 0; r < ROUNDS; r++) {
      senders.forEach((s, si) => {
        for (let i = 0; i < PER_ROUND; i++) {
          pending.push(
            sendMessage(s, 'send_message', { roomId, message: `r${r}-s${si}-${i}` }, 30000).then((res) => {
              assert.equal(res.ok, true, JSON.stringify(res));
              acks.push(res);
            }),
          );
        }
      });
      const seen = observer.inbox.all('chat_message').length;
      await observer.inbox.next('chat_message', () => observer.inbox.all('chat_message').length > seen, 30000);
      const latest = observer.inbox.all('chat_message').at(-1).seq;
      const since = r === 0 ? 0 : Math.max(0, latest - 7 * r);
      joinedSince.push([joiners[r], since]);
      joins.push(joinRoom(joiners[r], roomId, { since }));
    }
    await Promise.all(pending);
    await Promise.all(joins);
    const end = await chat(senders[1], roomId, 'end');
    acks.push(end);
    // Assert
    const bySeq = new Map(acks.map((a) => [a.seq, a.id]));
    assert.equal(bySeq.size, acks.length, 'every ack has its own seq');
    const allSeqs = [...bySeq.keys()].sort((x, y) => x - y);
    for (const [joiner, since] of joinedSince) {
      await joiner.inbox.next('chat_message', (m) => m.id === end.id, 30000);
      const got = joiner.inbox.all('chat_message', (m) => m.roomId === roomId);
      const expected = allSeqs.filter((s) => s > since);
      assert.deepEqual(got.map((m) => m.seq), expected, `joiner since=${since}: gap, duplicate or disorder`);
      for (const m of got) assert.equal(m.id, bySeq.get(m.seq), `id of seq ${m.seq}`);
      const [joinedIdx] = joiner.inbox.indexes('joined_room', (d) => d.roomId === roomId);
      assert.ok(joinedIdx < joiner.inbox.indexes('chat_message')[0], 'joined_room comes before any chat_message');
    }
    // And the senders themselves saw every message once, in seq order.
    for (const s of senders) {
      await s.inbox.next('chat_message', (m) => m.id === end.id, 30000);
      assert.deepEqual(s.inbox.all('chat_message').map((m) => m.seq), allSeqs, 'a sender missed or repeated a message');
    }
  });
});

describe('durability', () => {
  test('acknowledged messages survive a restart and are replayed from the new process', async () => {
    // Arrange
    const dir = await mkdtemp(join(tmpdir(), 'aegisx-durable-'));
    const env = { DATABASE_URL: `sqlite://${dir}/t.db` };
    const first = await startServer(env);
    const tenantId = uid('t');
    const roomId = uid('room');
    let acks;
    try {
      const s = await first.connect(first.token({ tenantId }));
      await joinRoom(s, roomId);
      acks = [await chat(s, roomId, 'kept 1'), await chat(s, roomId, 'kept 2')];
    } finally {
      await first.stop();
    }
    // Act
    const second = await startServer(env);
    try {
      const joiner = await second.connect(second.token({ tenantId }));
      await joinRoom(joiner, roomId, { since: 0 });
      await joiner.inbox.next('chat_message', (m) => m.id === acks[1].id);
      // Assert
      assert.deepEqual(
        joiner.inbox.all('chat_message').map((m) => [m.id, m.seq, m.message]),
        [
          [acks[0].id, acks[0].seq, 'kept 1'],
          [acks[1].id, acks[1].seq, 'kept 2'],
        ],
      );
      const next = await chat(joiner, roomId, 'after restart');
      assert.ok(next.seq > acks[1].seq, 'seq keeps increasing across restarts');
    } finally {
      await second.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a graceful shutdown closes the transport so clients reconnect elsewhere (not io server disconnect)', async () => {
    // Arrange
    const own = await startServer();
    const socket = await own.connect(own.token());
    // Act
    own.child.kill('SIGTERM');
    const reason = await disconnected(socket, 15000);
    await own.exited;
    // Assert
    assert.notEqual(reason, 'io server disconnect');
    assert.equal(reason, 'transport close');
    await own.stop();
  });
});
