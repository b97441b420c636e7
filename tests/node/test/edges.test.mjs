// What attackers and broken clients send below the official client: raw HTTP over `net` (session
// ids, body and header limits, websocket handshake validation, duplicate Origin headers, API
// body size) and raw Engine.IO/Socket.IO packets (ack ids out of range, a second CONNECT,
// malformed binary packets, attachments that never arrive). PROTOCOL.md §1 and §11.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import { WAIT_MS, openRawWebSocket, request, startServer, uid, withTimeout } from './helpers.mjs';

const API_KEY = 'edge-api-key-0123456789';
const ALLOWED = 'http://app.test';
const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ=='; // 16 bytes, RFC 6455's example
let server;
before(async () => {
  server = await startServer({
    API_KEYS: API_KEY,
    CORS_ORIGIN: ALLOWED,
    BODY_READ_TIMEOUT_SECS: 1,
    ATTACHMENT_TIMEOUT_SECS: 1,
  });
});
afterEach(() => server.closeClients());
after(() => server.stop());

/**
 * One raw HTTP exchange over TCP: writes `head` (and then `trickle`, one piece every `everyMs`),
 * resolves with the response text received until the server closed, or, with `untilHead`, as
 * soon as a whole response head has arrived. `socket` is exposed for the caller to end.
 */
function rawHttp(head, { trickle = [], everyMs = 200, untilHead = false, ms = WAIT_MS } = {}) {
  const socket = net.connect(server.port, '127.0.0.1');
  const chunks = [];
  let timer;
  const done = new Promise((resolve) => {
    const text = () => Buffer.concat(chunks).toString('latin1');
    socket.on('data', (d) => {
      chunks.push(d);
      if (untilHead && text().includes('\r\n\r\n')) resolve(text());
    });
    socket.on('error', () => {}); // EPIPE/ECONNRESET: judged by what was received
    socket.on('close', () => resolve(text()));
  }).finally(() => clearInterval(timer));
  socket.write(head);
  const pieces = [...trickle];
  if (pieces.length) {
    timer = setInterval(() => {
      if (pieces.length && !socket.destroyed) socket.write(pieces.shift());
    }, everyMs);
  }
  return { socket, response: withTimeout(done, ms, 'the raw HTTP response') };
}

function status(text) {
  return Number(text.match(/^HTTP\/1\.1 (\d{3})/)?.[1]);
}

function upgradeHead(headers, query = 'EIO=4&transport=websocket') {
  const lines = [`GET /socket.io/?${query} HTTP/1.1`, 'Host: 127.0.0.1', ...headers, '', ''];
  return lines.join('\r\n');
}

/** Bits of randomness a url-safe base64 id can carry. */
function idBits(id) {
  assert.match(id, /^[A-Za-z0-9_-]+$/);
  return Math.floor(id.length * 6);
}

/** A polling Engine.IO session joined to `/ws`; `until(pred)` long-polls until a packet matches. */
async function pollingSession() {
  const hs = await request(`${server.url}/socket.io/?EIO=4&transport=polling`);
  const { sid } = JSON.parse(hs.body.slice(1));
  const url = `${server.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`;
  const post = (body) => request(url, { method: 'POST', headers: { 'content-type': 'text/plain;charset=UTF-8' }, body });
  const seen = [];
  const until = async (pred, what) =>
    withTimeout(
      (async () => {
        for (;;) {
          const found = seen.findIndex(pred);
          if (found >= 0) return seen.splice(found, 1)[0];
          const res = await request(url);
          if (res.status !== 200) return { status: res.status };
          seen.push(...res.body.split('\x1e'));
        }
      })(),
      WAIT_MS,
      what,
    );
  await post(`40/ws,${JSON.stringify({ token: server.token() })}`);
  await until((p) => p.startsWith?.('40/ws,'), 'the CONNECT ack over polling');
  return { sid, url, post, until, seen };
}

/** A raw websocket transport joined to `/ws`. */
async function rawJoined() {
  const raw = await openRawWebSocket(server.url);
  raw.ws.send(`40/ws,${JSON.stringify({ token: server.token() })}`);
  raw.connectAck = await raw.next((m) => m.startsWith('40/ws,'));
  return raw;
}

/** The transport still answers: a `join_room` with an ack round trip. */
async function stillServed(raw) {
  const roomId = uid('alive');
  raw.ws.send(`42/ws,7["join_room",{"roomId":"${roomId}"}]`);
  assert.match(await raw.next((m) => m.startsWith('43/ws,7')), /"ok":true/);
}

describe('session ids', () => {
  test('Engine.IO session ids carry at least 120 bits of randomness (polling and websocket)', async () => {
    // Act
    const hs = await request(`${server.url}/socket.io/?EIO=4&transport=polling`);
    const raw = await openRawWebSocket(server.url);
    // Assert
    assert.ok(idBits(JSON.parse(hs.body.slice(1)).sid) >= 120, hs.body);
    assert.ok(idBits(raw.open.sid) >= 120, raw.open.sid);
    raw.ws.close();
  });

  test('Socket.IO socket ids (connectionId) carry at least 120 bits as well', async () => {
    // Act
    const raw = await rawJoined();
    const socket = await server.connect(server.token());
    // Assert
    assert.ok(idBits(JSON.parse(raw.connectAck.slice('40/ws,'.length)).sid) >= 120);
    assert.ok(idBits(socket.connectedPayload.connectionId) >= 120);
    raw.ws.close();
  });
});

describe('request body deadline (BODY_READ_TIMEOUT_SECS=1)', () => {
  test('a chunked polling POST trickling a byte at a time is cut with 408; its session keeps working', { timeout: 20000 }, async () => {
    // Arrange
    const session = await pollingSession();
    const packet = '42/ws,["message",{"type":"typing_start","data":{"roomId":"never-complete"}}]';
    // Act
    const slow = rawHttp(
      [
        `POST /socket.io/?EIO=4&transport=polling&sid=${session.sid} HTTP/1.1`,
        'Host: 127.0.0.1',
        'Content-Type: text/plain;charset=UTF-8',
        'Transfer-Encoding: chunked',
        '',
        '',
      ].join('\r\n'),
      { trickle: [...packet].map((c) => `1\r\n${c}\r\n`), untilHead: true, ms: 8000 },
    );
    // Meanwhile the session's own requests are served.
    await session.post('42/ws,1["join_room",{"roomId":"during-trickle"}]');
    const during = await session.until((p) => p.startsWith('43/ws,1'), 'the ack while the body trickles');
    const cut = await slow.response;
    slow.socket.destroy();
    // Assert
    assert.match(during, /"ok":true/);
    assert.equal(status(cut), 408, cut);
    assert.match(cut, /connection: close/i);
    await session.post('42/ws,2["join_room",{"roomId":"after-cut"}]');
    assert.match(await session.until((p) => p.startsWith('43/ws,2'), 'the ack after the cut'), /"ok":true/);
  });

  test('an API body trickling a byte at a time is cut with 408 in the API error shape', { timeout: 20000 }, async () => {
    // Arrange
    const body = JSON.stringify({ target: { all: true }, event: 'slow', data: 'x'.repeat(40) });
    // Act
    const slow = rawHttp(
      [
        'POST /api/v1/publish HTTP/1.1',
        'Host: 127.0.0.1',
        `Authorization: Bearer ${API_KEY}`,
        'Content-Type: application/json',
        `Content-Length: ${body.length}`,
        '',
        '',
      ].join('\r\n'),
      { trickle: [...body], untilHead: true, ms: 8000 },
    );
    const cut = await slow.response;
    // Assert
    assert.equal(status(cut), 408, cut);
    const more = await withTimeout(new Promise((r) => slow.socket.once('close', r)), 8000, 'the connection to close');
    assert.ok(more !== undefined);
    slow.socket.destroy();
  });

  test('a body that arrives in time is served as usual', async () => {
    // Act
    const res = await request(`${server.url}/api/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}` },
      body: { target: { all: true }, event: 'fast', data: 1 },
    });
    // Assert
    assert.equal(res.status, 202);
  });
});

describe('request head size', () => {
  test('100 Cookie headers of 60 KB get 431', { timeout: 20000 }, async () => {
    // Arrange
    const cookies = Array.from({ length: 100 }, (_, i) => `Cookie: c${i}=${'x'.repeat(60_000)}`);
    // Act
    const { response } = rawHttp(upgradeHead(['Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${WS_KEY}`, 'Sec-WebSocket-Version: 13', ...cookies]), { ms: 15000 });
    // Assert
    assert.equal(status(await response), 431);
  });

  test('one Cookie header of 100 cookies of 60 KB gets 431', { timeout: 20000 }, async () => {
    // Arrange
    const cookie = Array.from({ length: 100 }, (_, i) => `c${i}=${'x'.repeat(60_000)}`).join('; ');
    // Act
    const { response } = rawHttp(upgradeHead(['Connection: close', `Cookie: ${cookie}`], 'EIO=4&transport=polling'), { ms: 15000 });
    // Assert
    assert.equal(status(await response), 431);
  });

  test('a head under MAX_HEADER_BYTES (default 64 KiB) is served', async () => {
    // Act
    const res = await request(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { cookie: `c=${'x'.repeat(30_000)}` } });
    // Assert
    assert.equal(res.status, 200);
  });
});

describe('websocket handshake validation', () => {
  const upgrade = (extra) => rawHttp(upgradeHead(['Upgrade: websocket', 'Connection: Upgrade', ...extra]), { untilHead: true }).response;

  for (const [what, key] of [
    ['a short key', 'short'],
    ['a key of 15 bytes', Buffer.alloc(15, 7).toString('base64')],
    ['a key of 17 bytes', Buffer.alloc(17, 7).toString('base64')],
    ['a key that is not base64', '!!!!!!!!!!!!!!!!!!!!!!=='],
  ]) {
    test(`${what} as Sec-WebSocket-Key gets 400`, async () => {
      // Act
      const res = await upgrade([`Sec-WebSocket-Key: ${key}`, 'Sec-WebSocket-Version: 13']);
      // Assert
      assert.equal(status(res), 400, res);
    });
  }

  test('a Sec-WebSocket-Version other than 13 gets 426 naming version 13', async () => {
    // Act
    const res = await upgrade([`Sec-WebSocket-Key: ${WS_KEY}`, 'Sec-WebSocket-Version: 8']);
    // Assert
    assert.equal(status(res), 426, res);
    assert.match(res, /\r\nsec-websocket-version: 13\r\n/i);
  });

  test('a missing Sec-WebSocket-Version gets 400', async () => {
    // Act
    const res = await upgrade([`Sec-WebSocket-Key: ${WS_KEY}`]);
    // Assert
    assert.equal(status(res), 400, res);
  });

  test('a well-formed handshake gets 101', async () => {
    // Act
    const { socket, response } = rawHttp(upgradeHead(['Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${WS_KEY}`, 'Sec-WebSocket-Version: 13']), { untilHead: true });
    const res = await response;
    socket.destroy();
    // Assert
    assert.equal(status(res), 101, res);
    assert.match(res, /sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i);
  });

  test('a polling request carrying upgrade headers opens no session', async () => {
    // Act
    const res = await rawHttp(
      upgradeHead(['Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${WS_KEY}`, 'Sec-WebSocket-Version: 13'], 'EIO=4&transport=polling'),
      { untilHead: true },
    ).response;
    // Assert
    assert.equal(status(res), 400, res);
    assert.doesNotMatch(res, /"sid"/);
  });

  for (const [what, query, extra] of [
    ['a polling handshake', 'EIO=4&transport=polling', ['Connection: close']],
    ['a websocket upgrade', 'EIO=4&transport=websocket', ['Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${WS_KEY}`, 'Sec-WebSocket-Version: 13']],
  ]) {
    test(`${what} with two Origin headers gets 403, even when both are allowed`, async () => {
      for (const second of ['http://evil.test', ALLOWED]) {
        // Act
        const res = await rawHttp(upgradeHead([...extra, `Origin: ${ALLOWED}`, `Origin: ${second}`], query), { untilHead: true }).response;
        // Assert
        assert.equal(status(res), 403, res);
        assert.doesNotMatch(res, /"sid"/);
      }
    });
  }
});

describe('API body size', () => {
  test('an API body over the limit gets 413 in the API error shape', async () => {
    // Act
    const res = await request(`${server.url}/api/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}` },
      body: { target: { all: true }, event: 'big', data: 'y'.repeat(3_000_000) },
    });
    // Assert
    assert.equal(res.status, 413);
    assert.equal(res.json.error.code, 'PAYLOAD_TOO_LARGE');
  });
});

describe('Socket.IO packet strictness: each bad packet closes only its own connection', () => {
  /** Sends `packets` on a joined raw websocket; asserts it is closed and a peer is still served. */
  async function closesOnlyItself(packets) {
    const [victim, peer] = await Promise.all([rawJoined(), rawJoined()]);
    for (const p of packets) victim.ws.send(p);
    await withTimeout(victim.closed, WAIT_MS, 'the offending transport to close');
    await stillServed(peer);
    peer.ws.close();
  }

  for (const [what, id] of [
    ['2^64', '18446744073709551616'],
    ['26 digits', '99999999999999999999999999'],
    ['2^63, past the signed 64-bit id the server carries', '9223372036854775808'],
  ]) {
    test(`an ack id outside the 64-bit range (${what}) over websocket`, async () => {
      await closesOnlyItself([`42/ws,${id}["join_room",{"roomId":"r"}]`]);
    });
  }

  test('an ack id outside the 64-bit range over polling closes the session', async () => {
    // Arrange
    const [victim, peer] = await Promise.all([pollingSession(), rawJoined()]);
    // Act
    await victim.post('42/ws,18446744073709551616["join_room",{"roomId":"r"}]');
    const next = await victim.until(
      (p) => p === '1' || p === '' || p.startsWith('42/ws,["joined_room"'),
      'the session to close or serve the packet',
    );
    // Assert: closed (close packet, empty poll or unknown session), never served
    assert.ok(next.status === 400 || next === '1' || next === '', `the packet was served: ${JSON.stringify(next)}`);
    const after = await request(victim.url);
    assert.equal(after.status, 400);
    await stillServed(peer);
    peer.ws.close();
  });

  test('an ack id in range is still answered', async () => {
    // Arrange
    const raw = await rawJoined();
    // Act
    raw.ws.send('42/ws,9223372036854775807["join_room",{"roomId":"max-id"}]');
    // Assert
    assert.match(await raw.next((m) => m.startsWith('43/ws,9223372036854775807[')), /"ok":true/);
    raw.ws.close();
  });

  test('a second CONNECT to /ws on a transport that joined it', async () => {
    const raw = await rawJoined();
    raw.ws.send(`40/ws,${JSON.stringify({ token: server.token() })}`);
    await withTimeout(raw.closed, WAIT_MS, 'the transport to close');
    assert.equal(raw.messages.filter((m) => typeof m.text === 'string' && m.text.startsWith('40/ws,')).length, 1, 'a second CONNECT ack');
    await stillServed(await rawJoined());
  });

  for (const [what, packet] of [
    ['a BINARY_EVENT with no payload after its ack id (51-1-)', '51-1-'],
    ['a BINARY_EVENT to /ws with no payload', '51-/ws,'],
    ['a BINARY_EVENT whose payload is not an array', '51-/ws,{"_placeholder":true,"num":0}'],
    ['a BINARY_ACK without an ack id', '61-/ws,[{"_placeholder":true,"num":0}]'],
    ['an ACK without an ack id', '3/ws,["x"]'],
    ['an EVENT whose ack id is followed by no payload', '42/ws,12'],
  ]) {
    test(what, async () => {
      await closesOnlyItself([packet.startsWith('4') ? packet : `4${packet}`]);
    });
  }

  test('a binary packet whose attachments never arrive is dropped and closed after ATTACHMENT_TIMEOUT_SECS', { timeout: 15000 }, async () => {
    // Arrange: `complete` sends its attachment in time, `victim` never does
    const [victim, complete, peer] = await Promise.all([rawJoined(), rawJoined(), rawJoined()]);
    complete.ws.send('451-/ws,3["join_room",{"roomId":"bin","blob":{"_placeholder":true,"num":0}}]');
    complete.ws.send(Buffer.from([1, 2, 3]));
    await complete.next((m) => m.startsWith('43/ws,3')); // handled (the gateway takes no binary)
    // Act
    victim.ws.send('452-/ws,4["join_room",{"roomId":"bin","a":{"_placeholder":true,"num":0},"b":{"_placeholder":true,"num":1}}]');
    victim.ws.send(Buffer.from([1]));
    await withTimeout(victim.closed, 8000, 'the transport with missing attachments to close');
    // Assert
    assert.equal(victim.messages.some((m) => typeof m.text === 'string' && m.text.startsWith('43/ws,4')), false, 'the partial packet was handled');
    await stillServed(complete);
    await stillServed(peer);
    complete.ws.close();
    peer.ws.close();
  });
});
