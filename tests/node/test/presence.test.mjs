// PROTOCOL.md §3 "Presence at scale", §5 (watch_presence, unwatch_presence, list_online) and
// the §11 presence details: presence per (tenant, user), `connected` first, tenant-wide
// announcements only up to PRESENCE_BROADCAST_MAX, watching, listing, GET /api/v1/presence,
// offline grace and coalescing. Small sizes: PRESENCE_BROADCAST_MAX=2, PRESENCE_LIST_MAX=2.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { RFC3339_UTC, ack, expectFailure, openRawWebSocket, request, sendMessage, startServer, uid } from './helpers.mjs';

const KEY = 'presence-test-api-key';

/** Waits until `observer` got `user_status` `status` for `userId`. */
const statusOf = (observer, userId, status) =>
  observer.inbox.next('user_status', (d) => d.userId === userId && d.status === status);

/** Every status `observer` received for `userId`, in order. */
const statuses = (observer, userId) => observer.inbox.all('user_status', (d) => d.userId === userId).map((d) => d.status);

describe('presence in small tenants (PRESENCE_BROADCAST_MAX=2)', () => {
  let server;
  before(async () => {
    server = await startServer({ PRESENCE_BROADCAST_MAX: 2, PRESENCE_LIST_MAX: 2, API_KEYS: KEY });
  });
  afterEach(() => server.closeClients());
  after(() => server.stop());

  /** Connects `sub` in `tenantId` and waits for its own tenant-wide online (the pass ran). */
  async function online(sub, tenantId) {
    const s = await server.connect(server.token({ sub, tenantId }));
    await statusOf(s, sub, 'online');
    return s;
  }

  test('connected is the first event, before the user own user_status online', async () => {
    // Arrange: a tenant where presence is announced tenant-wide
    const tenantId = uid('t');
    const sub = uid('u');
    // Act
    const socket = await server.connect(server.token({ sub, tenantId }));
    await statusOf(socket, sub, 'online');
    // Assert: the inbox records from the socket's creation
    assert.equal(socket.inbox.events[0].event, 'connected');
    assert.ok(socket.inbox.indexes('user_status', (d) => d.userId === sub)[0] > 0);
  });

  test('connected comes first even for an event sent the instant the CONNECT ack arrives', async () => {
    // Arrange: a raw socket, so nothing sits between the ack and the event
    const tenantId = uid('t');
    const raw = await openRawWebSocket(server.url);
    raw.ws.send(`40/ws,${JSON.stringify({ token: server.token({ tenantId }) })}`);
    await raw.next((m) => m.startsWith('40/ws,'));
    // Act
    raw.ws.send(`42/ws,${JSON.stringify(['join_room', { roomId: 'lobby' }])}`);
    await raw.next((m) => m.startsWith('42/ws,["joined_room"'));
    // Assert
    const events = raw.messages.map((m) => m.text).filter((t) => typeof t === 'string' && t.startsWith('42/ws,'));
    assert.equal(JSON.parse(events[0].slice(6))[0], 'connected', events.join('\n'));
    raw.ws.close();
  });

  test('presence is per (tenant, user): the last connection in one tenant goes offline there only', async () => {
    // Arrange: one user connected in tenants A and B, an observer in each
    const [tA, tB] = [uid('tA'), uid('tB')];
    const obsA = await server.connect(server.token({ tenantId: tA }));
    const obsB = await server.connect(server.token({ tenantId: tB }));
    const sub = uid('u');
    const inA = await server.connect(server.token({ sub, tenantId: tA }));
    await statusOf(obsA, sub, 'online');
    const inB = await server.connect(server.token({ sub, tenantId: tB }));
    await statusOf(obsB, sub, 'online');
    // Act
    inA.close();
    // Assert: offline in A; in B still online (barrier: a status set after the close)
    await statusOf(obsA, sub, 'offline');
    assert.equal((await sendMessage(inB, 'user_status', { status: 'busy' })).ok, true);
    await statusOf(obsB, sub, 'busy');
    assert.deepEqual(statuses(obsB, sub), ['online', 'busy']);
    assert.deepEqual(statuses(obsA, sub), ['online', 'offline']);
  });

  test('list_online shows users who were online before the client connected', async () => {
    // Arrange
    const tenantId = uid('t');
    const early = uid('early');
    await online(early, tenantId);
    // Act
    const late = await server.connect(server.token({ tenantId }));
    const res = await ack(late, 'list_online', {});
    // Assert
    assert.equal(res.ok, true);
    assert.equal(res.truncated, false);
    assert.equal(res.users[early].status, 'online');
    assert.match(res.users[early].since, RFC3339_UTC);
  });

  test('list_online answers at most PRESENCE_LIST_MAX users, with truncated: true', async () => {
    // Arrange: four users online (the observer watches the three others to know they are)
    const tenantId = uid('t');
    const observer = await server.connect(server.token({ tenantId }));
    const subs = [uid('a'), uid('b'), uid('c')];
    assert.equal((await ack(observer, 'watch_presence', { userIds: subs })).ok, true);
    for (const sub of subs) {
      await server.connect(server.token({ sub, tenantId }));
      await statusOf(observer, sub, 'online');
    }
    // Act
    const res = await ack(observer, 'list_online', {});
    // Assert
    assert.equal(res.ok, true);
    assert.equal(Object.keys(res.users).length, 2);
    assert.equal(res.truncated, true);
  });

  test('above PRESENCE_BROADCAST_MAX only watchers hear of a user, set statuses included', async () => {
    // Arrange: three users online (above 2), one of them watches `watched`
    const tenantId = uid('t');
    const watcher = await server.connect(server.token({ tenantId }));
    const bystander = await server.connect(server.token({ tenantId }));
    await server.connect(server.token({ tenantId }));
    const sub = uid('watched');
    const other = uid('other');
    const first = await ack(watcher, 'watch_presence', { userIds: [sub, sub] });
    assert.deepEqual(first, { ok: true, users: { [sub]: { status: 'offline', since: null } } });
    assert.equal((await ack(bystander, 'watch_presence', { userIds: [other] })).ok, true);
    // Act 1: the watched user connects
    const watched = await server.connect(server.token({ sub, tenantId }));
    // Assert 1
    const on = await statusOf(watcher, sub, 'online');
    assert.deepEqual(Object.keys(on).sort(), ['status', 'timestamp', 'userId']);
    assert.match(on.timestamp, RFC3339_UTC);
    // Act 2: a set status, then a barrier for the bystander (a user it watches)
    assert.equal((await sendMessage(watched, 'user_status', { status: 'busy' })).ok, true);
    await statusOf(watcher, sub, 'busy');
    await server.connect(server.token({ sub: other, tenantId }));
    await statusOf(bystander, other, 'online');
    // Assert 2: no tenant-wide announcement
    assert.deepEqual(statuses(bystander, sub), []);
    assert.deepEqual(statuses(watched, sub), [], 'not even to the user itself');
    // Act 3: the ack of a new watch carries the current state
    const res = await ack(bystander, 'watch_presence', { userIds: [sub] });
    assert.equal(res.ok, true);
    assert.equal(res.users[sub].status, 'busy');
    assert.match(res.users[sub].since, RFC3339_UTC);
  });

  test('unwatch_presence stops the announcements', async () => {
    // Arrange: above the threshold, a watcher of two users
    const tenantId = uid('t');
    const watcher = await server.connect(server.token({ tenantId }));
    await server.connect(server.token({ tenantId }));
    await server.connect(server.token({ tenantId }));
    const [x, y] = [uid('x'), uid('y')];
    assert.equal((await ack(watcher, 'watch_presence', { userIds: [x, y] })).ok, true);
    const sx = await server.connect(server.token({ sub: x, tenantId }));
    const sy = await server.connect(server.token({ sub: y, tenantId }));
    await statusOf(watcher, x, 'online');
    await statusOf(watcher, y, 'online');
    // Act
    const res = await ack(watcher, 'unwatch_presence', { userIds: [x] });
    assert.equal(res.ok, true);
    assert.equal(res.users[x].status, 'online');
    assert.equal((await sendMessage(sx, 'user_status', { status: 'away' })).ok, true);
    assert.equal((await sendMessage(sy, 'user_status', { status: 'away' })).ok, true);
    // Assert
    await statusOf(watcher, y, 'away');
    assert.deepEqual(statuses(watcher, x), ['online']);
  });

  test('watching works below the threshold too, with one delivery per transition', async () => {
    // Arrange: a small tenant
    const tenantId = uid('t');
    const watcher = await server.connect(server.token({ tenantId }));
    const sub = uid('w');
    assert.equal((await ack(watcher, 'watch_presence', { userIds: [sub] })).ok, true);
    // Act
    const s = await server.connect(server.token({ sub, tenantId }));
    await statusOf(watcher, sub, 'online');
    s.close();
    await statusOf(watcher, sub, 'offline');
    // Assert
    assert.deepEqual(statuses(watcher, sub), ['online', 'offline']);
  });

  test('a socket may watch at most 500 users: TOO_MANY_WATCHES', async () => {
    // Arrange
    const socket = await server.connect(server.token({ tenantId: uid('t') }));
    const many = Array.from({ length: 500 }, (_, i) => `user-${i}`);
    assert.equal((await ack(socket, 'watch_presence', { userIds: many })).ok, true);
    // Act + Assert
    await expectFailure(socket, 'watch_presence', { userIds: ['one-more'] }, 'TOO_MANY_WATCHES');
    assert.equal((await ack(socket, 'watch_presence', { userIds: ['user-7'] })).ok, true, 'already watched');
    assert.equal((await ack(socket, 'unwatch_presence', { userIds: ['user-1'] })).ok, true);
    assert.equal((await ack(socket, 'watch_presence', { userIds: ['one-more'] })).ok, true);
  });

  for (const [what, payload] of [
    ['no object', 'x'],
    ['no userIds', {}],
    ['userIds not an array', { userIds: 'a' }],
    ['an empty id', { userIds: [''] }],
    ['a non-string id', { userIds: [7] }],
  ]) {
    test(`watch_presence with ${what} is INVALID_PAYLOAD`, async () => {
      const socket = await server.connect(server.token({ tenantId: uid('t') }));
      await expectFailure(socket, 'watch_presence', payload, 'INVALID_PAYLOAD');
    });
  }

  test('users of other tenants are never visible: not announced, offline in acks, not listed', async () => {
    // Arrange
    const [mine, theirs] = [uid('t1'), uid('t2')];
    const watcher = await server.connect(server.token({ tenantId: mine }));
    const sub = uid('x');
    const barrier = uid('barrier');
    assert.equal((await ack(watcher, 'watch_presence', { userIds: [sub, barrier] })).ok, true);
    // Act: the watched id comes online in another tenant
    const elsewhere = await server.connect(server.token({ sub, tenantId: theirs }));
    await statusOf(elsewhere, sub, 'online');
    await server.connect(server.token({ sub: barrier, tenantId: mine }));
    await statusOf(watcher, barrier, 'online');
    // Assert
    assert.deepEqual(statuses(watcher, sub), []);
    const res = await ack(watcher, 'watch_presence', { userIds: [sub] });
    assert.deepEqual(res.users[sub], { status: 'offline', since: null });
    assert.equal((await ack(watcher, 'list_online', {})).users[sub], undefined);
  });

  test('a socket without a tenant sees nobody: watch acks offline, list_online empty', async () => {
    // Arrange: a user online in a tenant
    const sub = uid('x');
    await online(sub, uid('t'));
    const lonely = await server.connect(server.token());
    // Act
    const watched = await ack(lonely, 'watch_presence', { userIds: [sub] });
    const listed = await ack(lonely, 'list_online', {});
    // Assert
    assert.deepEqual(watched, { ok: true, users: { [sub]: { status: 'offline', since: null } } });
    assert.deepEqual(listed, { ok: true, users: {}, truncated: false });
  });

  describe('GET /api/v1/presence', () => {
    const get = (query, key = KEY) =>
      request(`${server.url}/api/v1/presence${query}`, { headers: key ? { authorization: `Bearer ${key}` } : {} });

    test('answers the state of the named users and the tenant online users', async () => {
      // Arrange
      const tenantId = uid('t');
      const sub = uid('u');
      await online(sub, tenantId);
      // Act
      const named = await get(`?tenantId=${tenantId}&userIds=${sub},nobody`);
      const listed = await get(`?tenantId=${tenantId}`);
      const other = await get(`?tenantId=${uid('other')}&userIds=${sub}`);
      // Assert
      assert.equal(named.status, 200);
      assert.equal(named.json.users[sub].status, 'online');
      assert.match(named.json.users[sub].since, RFC3339_UTC);
      assert.deepEqual(named.json.users.nobody, { status: 'offline', since: null });
      assert.equal(listed.status, 200);
      assert.deepEqual(Object.keys(listed.json.users), [sub]);
      assert.equal(listed.json.truncated, false);
      assert.deepEqual(other.json.users[sub], { status: 'offline', since: null });
    });

    test('limit bounds the list', async () => {
      const tenantId = uid('t');
      await online(uid('a'), tenantId);
      await online(uid('b'), tenantId);
      const r = await get(`?tenantId=${tenantId}&limit=1`);
      assert.equal(r.status, 200);
      assert.equal(Object.keys(r.json.users).length, 1);
      assert.equal(r.json.truncated, true);
    });

    for (const [what, query] of [
      ['limit 0', '?tenantId=t&limit=0'],
      ['limit 1001', '?tenantId=t&limit=1001'],
      ['an empty id in userIds', '?tenantId=t&userIds=a,,b'],
      ['more than 1000 userIds', `?tenantId=t&userIds=${Array.from({ length: 1001 }, (_, i) => `u${i}`).join(',')}`],
      ['a tenant id over 128 characters', `?tenantId=${'t'.repeat(129)}`],
    ]) {
      test(`${what} is 400`, async () => {
        const r = await get(query);
        assert.equal(r.status, 400);
        assert.equal(r.json.error.code, 'INVALID_PAYLOAD');
      });
    }

    test('needs the API key, and is in the OpenAPI document with its constraints', async () => {
      assert.equal((await get('?tenantId=t', null)).status, 401);
      const doc = (await request(`${server.url}/api/v1/openapi.json`)).json;
      const params = Object.fromEntries(doc.paths['/presence'].get.parameters.map((p) => [p.name, p.schema]));
      assert.equal(params.limit.maximum, 1000);
      assert.equal(params.limit.minimum, 1);
      assert.equal(params.tenantId.maxLength, 128);
      assert.ok(params.userIds.pattern);
    });
  });
});

describe('offline grace (PRESENCE_OFFLINE_GRACE_MS=1000)', () => {
  let server;
  before(async () => {
    server = await startServer({ PRESENCE_OFFLINE_GRACE_MS: 1000, PRESENCE_TICK_MS: 20 });
  });
  afterEach(() => server.closeClients());
  after(() => server.stop());

  test('a user who reconnects within the grace is not announced offline; one who does not is', async () => {
    // Arrange
    const tenantId = uid('t');
    const observer = await server.connect(server.token({ tenantId }));
    const sub = uid('u');
    const token = server.token({ sub, tenantId });
    const first = await server.connect(token);
    await statusOf(observer, sub, 'online');
    // Act 1: close, let a pass run (a newcomer's online proves it), reconnect
    first.close();
    const newcomer = server.token({ tenantId });
    const n = await server.connect(newcomer);
    await statusOf(observer, n.connectedPayload.userId, 'online');
    const again = await server.connect(token);
    assert.equal((await sendMessage(again, 'user_status', { status: 'away' })).ok, true);
    await statusOf(observer, sub, 'away');
    // Assert 1
    assert.deepEqual(statuses(observer, sub), ['online', 'away']);
    // Act 2: close for good
    again.close();
    // Assert 2: offline once the grace has passed
    await statusOf(observer, sub, 'offline');
    assert.deepEqual(statuses(observer, sub), ['online', 'away', 'offline']);
  });
});

describe('coalescing (PRESENCE_TICK_MS=1500)', () => {
  let server;
  before(async () => {
    server = await startServer({ PRESENCE_TICK_MS: 1500 });
  });
  afterEach(() => server.closeClients());
  after(() => server.stop());

  test('a user who comes and goes within one tick is never announced', async () => {
    // Arrange: an announcement marks a pass; the next one is a whole tick away
    const tenantId = uid('t');
    const observer = await server.connect(server.token({ tenantId }));
    await statusOf(observer, observer.connectedPayload.userId, 'online');
    // Act: a flap right after the pass
    const sub = uid('flap');
    const flap = await server.connect(server.token({ sub, tenantId }));
    flap.close();
    // Barrier: a user who connects after the flap, announced in a later (or the same) pass
    const barrier = await server.connect(server.token({ tenantId }));
    await statusOf(observer, barrier.connectedPayload.userId, 'online');
    // Assert
    assert.deepEqual(statuses(observer, sub), []);
  });
});
