// Admission control for handshakes (MAX_HANDSHAKES_IN_PROGRESS): an Engine.IO open beyond the
// limit is refused with 503 before any session exists, the official client retries it with its
// own backoff, and sockets already connected are served meanwhile.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { io } from 'socket.io-client';

import { ack, chat, joinRoom, openRawWebSocket, request, startServer, uid, withTimeout } from './helpers.mjs';

/** One sample of a label-less family from /metrics. */
async function metric(server, name) {
  const text = (await request(`${server.url}/metrics`)).body;
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

/** Polls `probe` until it returns a truthy value; fails after `ms`. */
async function eventually(probe, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const pollingOpen = (server) => request(`${server.url}/socket.io/?EIO=4&transport=polling`);

test('an Engine.IO open beyond MAX_HANDSHAKES_IN_PROGRESS gets 503 with Retry-After while the slots are held, and a slot comes back when its session ends', async () => {
  const server = await startServer({ MAX_HANDSHAKES_IN_PROGRESS: '2' });
  const raws = [];
  try {
    // Two sessions that never CONNECT hold both slots (until CONNECT_TIMEOUT_SECS).
    raws.push(await openRawWebSocket(server.url));
    raws.push(await openRawWebSocket(server.url));

    // Answered at once, not queued behind the two handshakes in progress.
    const refused = await pollingOpen(server);
    assert.equal(refused.status, 503);
    assert.equal(refused.headers['retry-after'], '1');
    assert.equal(refused.json?.error?.code, 'UNAVAILABLE');
    await assert.rejects(openRawWebSocket(server.url), (e) => e.statusCode === 503);

    // Only opening requests are refused: the rest of the node answers as usual.
    assert.equal((await request(`${server.url}/healthz`)).status, 200);
    assert.equal(await metric(server, 'aegisx_handshakes_in_progress'), 2);
    assert.ok((await metric(server, 'aegisx_handshakes_refused_total')) >= 2);

    // A session that ends gives its slot back.
    raws.shift().ws.close();
    const opened = await eventually(async () => {
      const r = await pollingOpen(server);
      return r.status === 200 ? r : null;
    }, 5000, 'an open to be admitted again');
    assert.match(opened.body, /^0\{"sid"/);
  } finally {
    for (const r of raws) r.ws.close();
    await server.stop();
  }
});

test('a socket told connected gives its slot back: one slot serves any number of connects in turn', async () => {
  const server = await startServer({ MAX_HANDSHAKES_IN_PROGRESS: '1' });
  try {
    for (let i = 0; i < 4; i++) {
      // reconnection is off: a refused open would fail this connect.
      const s = await server.connect(server.token());
      assert.equal(typeof s.connectedPayload.connectionId, 'string');
    }
    await eventually(async () => (await metric(server, 'aegisx_handshakes_in_progress')) === 0, 5000, 'no handshake in progress');
    assert.equal(await metric(server, 'aegisx_handshakes_refused_total'), 0);
  } finally {
    await server.stop();
  }
});

test('a burst of connects beyond the limit is refused, the official client retries every one in, and a connected socket keeps getting its acks', async () => {
  const BURST = 30;
  const server = await startServer({ MAX_HANDSHAKES_IN_PROGRESS: '2' });
  const burst = [];
  try {
    const room = uid('room');
    const tenant = uid('acme');
    const inside = await server.connect(server.token({ tenantId: tenant }));
    await joinRoom(inside, room);

    let done = false;
    let acksDuringBurst = 0;
    const chatter = (async () => {
      while (!done) {
        const res = await chat(inside, room, `still here ${acksDuringBurst}`);
        assert.equal(res.ok, true);
        if (!done) acksDuringBurst += 1;
      }
    })();

    const clients = [];
    for (let i = 0; i < BURST; i++) {
      const s = io(`${server.url}/ws`, {
        forceNew: true,
        transports: i % 2 === 0 ? ['websocket'] : ['polling', 'websocket'],
        auth: { token: server.token({ tenantId: tenant }) },
        // The official client's own retry, with its backoff shortened for the test.
        reconnection: true,
        reconnectionDelay: 50,
        reconnectionDelayMax: 250,
        timeout: 5000,
      });
      burst.push(s);
      let errors = 0;
      s.on('connect_error', () => {
        errors += 1;
      });
      clients.push(
        withTimeout(new Promise((resolve) => s.once('connected', () => resolve(errors))), 30000, `client ${i} connected`),
      );
    }
    const errorsPerClient = await Promise.all(clients);
    done = true;
    await chatter;

    const retried = errorsPerClient.filter((n) => n > 0).length;
    assert.ok(retried > 0, 'some clients were refused and came in on a retry');
    assert.ok((await metric(server, 'aegisx_handshakes_refused_total')) >= retried);
    assert.ok(acksDuringBurst >= 1, 'the connected socket was answered while the burst came in');
    // Still served after the burst, and nothing is left holding a slot.
    assert.deepEqual(await ack(inside, 'leave_room', { roomId: room }), { ok: true, roomId: room });
    await eventually(async () => (await metric(server, 'aegisx_handshakes_in_progress')) === 0, 5000, 'no handshake in progress');
  } finally {
    for (const s of burst) s.close();
    await server.stop();
  }
});
