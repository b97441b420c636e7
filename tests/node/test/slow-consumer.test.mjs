// A client that stops reading is let go, not buffered without end; the others keep receiving.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { joinRoom, openRawWebSocket, request, startServer, uid, withTimeout } from './helpers.mjs';

const KEY = 'slow-consumer-key-0123456789';

/** The value of a label-less or `tenant_id`-labelled sample in a Prometheus exposition. */
function sample(text, name, tenant) {
  const labels = tenant === undefined ? '' : `\\{tenant_id="${tenant}"\\}`;
  const m = text.match(new RegExp(`^${name}${labels} (\\d+)`, 'm'));
  return m ? Number(m[1]) : undefined;
}

/** Scrapes /metrics until `pred(text)` holds (the server updates gauges asynchronously). */
async function metricsUntil(url, pred, what) {
  for (let i = 0; i < 100; i++) {
    const text = (await request(`${url}/metrics`)).body;
    if (pred(text)) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`metrics never showed ${what}`);
}

test('a socket whose send buffer fills is disconnected at once while a reading one gets every message', async () => {
  const server = await startServer({
    API_KEYS: KEY,
    SOCKET_BUFFER_PACKETS: '16',
    // No heartbeat within the test: only the full buffer can close the slow socket.
    PING_INTERVAL_MS: '60000',
    PING_TIMEOUT_MS: '60000',
  });
  try {
    const tenant = uid('t');
    const room = 'flood';
    const reader = await server.connect(server.token({ tenantId: tenant }));
    await joinRoom(reader, room);

    // The slow client: raw Engine.IO, joins, then stops reading from its TCP socket.
    const slow = await openRawWebSocket(server.url);
    slow.ws.send(`40/ws,${JSON.stringify({ token: server.token({ tenantId: tenant }) })}`);
    await slow.next((m) => m.startsWith('40/ws'));
    slow.ws.send(`42/ws,1${JSON.stringify(['join_room', { roomId: room }])}`);
    await slow.next((m) => m.startsWith('43/ws,1'));
    slow.ws._socket.pause();

    // Flood the room through the API: 400 × 32 KiB fills the kernel buffers and then the
    // socket's 16-packet buffer.
    const data = 'x'.repeat(32 * 1024);
    const sent = 400;
    for (let i = 0; i < sent; i++) {
      const r = await request(`${server.url}/api/v1/publish`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}` },
        body: { target: { tenantId: tenant, roomId: room }, event: 'bulk', data: { i, data } },
      });
      assert.equal(r.status, 202);
    }
    // The reader got everything, in order.
    const last = await reader.inbox.next('bulk', (d) => d.i === sent - 1, 20_000);
    assert.equal(last.i, sent - 1);
    assert.deepEqual(reader.inbox.all('bulk').map((d) => d.i), [...Array(sent).keys()]);
    assert.equal(reader.connected, true);

    // The slow one is gone on the server while its client still does not read: its disconnect
    // handler ran (the tenant's connection gauge is back to the reader alone), counted once.
    const metrics = await metricsUntil(
      server.url,
      (m) => sample(m, 'websocket_connections_total', tenant) === 1,
      'the slow socket disconnected',
    );
    assert.equal(sample(metrics, 'websocket_slow_consumer_disconnects_total'), 1);
    assert.ok(sample(metrics, 'websocket_dropped_packets_total') > 0, 'dropped packets are counted');
    assert.equal(reader.connected, true);
    // Its transport was closed too (seen once it reads again).
    slow.ws._socket.resume();
    await withTimeout(slow.closed, 20_000, 'the slow socket to be closed');
  } finally {
    await server.stop();
  }
});
