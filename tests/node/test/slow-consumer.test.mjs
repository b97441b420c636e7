// A client that stops reading is let go, not buffered without end; the others keep receiving.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { joinRoom, openRawWebSocket, request, startServer, uid, withTimeout } from './helpers.mjs';

const KEY = 'slow-consumer-key-0123456789';

test('a socket that stops reading is disconnected while a reading one gets every message', async () => {
  const server = await startServer({
    API_KEYS: KEY,
    SOCKET_BUFFER_PACKETS: '16',
    PING_INTERVAL_MS: '300',
    PING_TIMEOUT_MS: '300',
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

    // The slow one was closed by the server (seen once it reads again).
    slow.ws._socket.resume();
    await withTimeout(slow.closed, 20_000, 'the slow socket to be closed');
    const metrics = (await request(`${server.url}/metrics`)).body;
    const dropped = Number(metrics.match(/^websocket_dropped_packets_total (\d+)/m)?.[1] ?? 0);
    assert.ok(dropped > 0, 'dropped packets are counted');
  } finally {
    await server.stop();
  }
});
