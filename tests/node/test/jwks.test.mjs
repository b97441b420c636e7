// Identity-provider keys (JWT_JWKS_URL): a JWKS served over loopback HTTP by the test, with keys
// made here for RS256, ES256 and EdDSA, counting the gateway's fetches. Connect with each
// algorithm; rotation with live sockets staying connected; an unknown `kid` fetches once and a
// flood of them does not flood the provider; the provider down at start (not ready) and later
// (cached keys keep working); algorithm confusion refused. Also `check-config` and `token`.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHmac, generateKeyPairSync, randomUUID, sign as cryptoSign } from 'node:crypto';
import http from 'node:http';
import { promisify } from 'node:util';

import { BIN, WAIT_MS, joinRoom, nowSecs, request, startServer, uid } from './helpers.mjs';

const run = promisify(execFile);
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');

function keyPair(alg) {
  const { publicKey, privateKey } =
    alg === 'RS256'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : alg === 'ES256'
        ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
        : generateKeyPairSync('ed25519');
  const kid = `${alg}-${randomUUID()}`;
  return {
    alg,
    kid,
    privateKey,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }),
    jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' },
  };
}

/** A compact JWS over `claims` (exp +1 h by default) with the key's algorithm. */
function signWith(key, claims, { kid = key.kid } = {}) {
  const header = { alg: key.alg, typ: 'JWT', ...(kid === undefined ? {} : { kid }) };
  const input = `${b64(header)}.${b64({ exp: nowSecs() + 3600, ...claims })}`;
  const data = Buffer.from(input);
  const sig =
    key.alg === 'RS256'
      ? cryptoSign('sha256', data, key.privateKey)
      : key.alg === 'ES256'
        ? cryptoSign('sha256', data, { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
        : cryptoSign(null, data, key.privateKey);
  return `${input}.${sig.toString('base64url')}`;
}

/**
 * The provider: each path serves its own document (`set(path, { keys, status, cacheControl })`)
 * and counts the requests it answered.
 */
async function startProvider() {
  const docs = new Map();
  const counts = new Map();
  const server = http.createServer((req, res) => {
    const path = req.url;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const doc = docs.get(path) ?? { status: 404 };
    const headers = { 'content-type': 'application/json' };
    if (doc.cacheControl) headers['cache-control'] = doc.cacheControl;
    res.writeHead(doc.status ?? 200, headers);
    res.end(doc.status && doc.status !== 200 ? '{"error":"down"}' : JSON.stringify({ keys: doc.keys.map((k) => k.jwk ?? k) }));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    url: (path) => `${base}${path}`,
    set: (path, doc) => docs.set(path, doc),
    count: (path) => counts.get(path) ?? 0,
    close: () => new Promise((r) => server.close(r)),
  };
}

/** Waits (bounded) until `/readyz` satisfies `pred`; resolves with its JSON. */
async function readyzUntil(server, pred, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const res = await request(`${server.url}/readyz`);
    if (pred(res)) return res;
    if (Date.now() > deadline) assert.fail(`/readyz never matched; last: ${res.status} ${res.body}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const rsa = keyPair('RS256');
const ec = keyPair('ES256');
const ed = keyPair('EdDSA');

let provider;
const servers = {};
const jwksEnv = (path, extra = {}) => ({ JWT_SECRET: undefined, JWT_JWKS_URL: provider.url(path), ...extra });

before(async () => {
  provider = await startProvider();
  // One document with a key of every type (and a symmetric one, never usable): each server
  // uses only the keys of its configured algorithm.
  provider.set('/all', { keys: [rsa, ec, ed, { kty: 'oct', kid: 'hmac', k: Buffer.from('x'.repeat(40)).toString('base64url') }] });
  provider.set('/rotate', { keys: [] });
  provider.set('/down', { status: 503 });
  const started = await Promise.all([
    startServer(jwksEnv('/all')),
    startServer(jwksEnv('/all', { JWT_ALGORITHM: 'ES256' })),
    startServer(jwksEnv('/all', { JWT_ALGORITHM: 'EdDSA' })),
    startServer(jwksEnv('/down', { JWT_JWKS_MIN_REFRESH_SECS: '1', JWT_JWKS_MAX_REFRESH_SECS: '1' })),
  ]);
  [servers.rs, servers.es, servers.ed, servers.down] = started;
});
afterEach(() => Object.values(servers).forEach((s) => s.closeClients()));
after(async () => {
  await Promise.all(Object.values(servers).map((s) => s.stop()));
  await provider.close();
});

describe('JWKS: one key per algorithm', () => {
  for (const [name, key] of [
    ['rs', rsa],
    ['es', ec],
    ['ed', ed],
  ]) {
    test(`a ${key.alg} token whose kid is published is accepted by a server pinned to ${key.alg}`, async () => {
      // Arrange
      const sub = uid(key.alg);
      // Act
      const socket = await servers[name].connect(signWith(key, { sub }));
      // Assert
      assert.equal(socket.connectedPayload.userId, sub);
    });
  }

  test('a token without kid is tried with the published keys of the algorithm', async () => {
    // Act
    const socket = await servers.rs.connect(signWith(rsa, { sub: uid('nokid') }, { kid: undefined }));
    // Assert
    assert.equal(socket.connected, true);
  });

  test('a token of another algorithm is refused even though its key is in the same document', async () => {
    // Act: the ES256 key is published, but the server is pinned to RS256
    const err = await servers.rs.refused(signWith(ec, { sub: uid('es') }));
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('an HS256 token keyed with the RSA public key (algorithm confusion) is refused without a fetch', async () => {
    // Arrange: HMAC keyed with the PEM, and with the published symmetric key's kid
    const before = provider.count('/all');
    const input = `${b64({ alg: 'HS256', typ: 'JWT', kid: rsa.kid })}.${b64({ sub: uid('conf'), exp: nowSecs() + 3600 })}`;
    const confused = `${input}.${createHmac('sha256', rsa.publicPem).update(input).digest('base64url')}`;
    const input2 = `${b64({ alg: 'HS256', typ: 'JWT', kid: 'hmac' })}.${b64({ sub: uid('conf'), exp: nowSecs() + 3600 })}`;
    const viaOct = `${input2}.${createHmac('sha256', 'x'.repeat(40)).update(input2).digest('base64url')}`;
    // Act
    const errs = [await servers.rs.refused(confused), await servers.rs.refused(viaOct)];
    // Assert
    assert.deepEqual(errs.map((e) => e.message), ['Invalid token', 'Invalid token']);
    assert.equal(provider.count('/all'), before, 'a token of the wrong algorithm never makes the gateway fetch');
  });

  test('/readyz reports the key set and a metric shows the provider up', async () => {
    // Act
    const res = await request(`${servers.rs.url}/readyz`);
    const metrics = await request(`${servers.rs.url}/metrics`);
    // Assert
    assert.equal(res.status, 200);
    assert.equal(res.json.jwks.status, 'ok');
    assert.equal(res.json.jwks.keys, 1, 'only the RS256 key of the document is usable');
    assert.match(metrics.body, /^aegisx_jwks_up 1$/m);
  });
});

describe('JWKS: rotation and unknown kids', () => {
  let server;
  let oldKey;
  before(async () => {
    oldKey = keyPair('RS256');
    provider.set('/rotate', { keys: [oldKey] });
    server = await startServer(jwksEnv('/rotate', { JWT_JWKS_MIN_REFRESH_SECS: '600' }));
    servers.rotate = server;
  });

  test('a new key is fetched at once for its first token, live sockets stay, a flood of unknown kids does not reach the provider', { timeout: 20000 }, async () => {
    // Arrange: a live socket on the old key
    const live = await server.connect(signWith(oldKey, { sub: uid('live') }));
    const fetchesAtStart = provider.count('/rotate');
    assert.equal(fetchesAtStart, 1);
    const newKey = keyPair('RS256');
    provider.set('/rotate', { keys: [newKey] }); // old key removed
    // Act: the first token of the new key
    const fresh = await server.connect(signWith(newKey, { sub: uid('new') }));
    // Assert: one fetch for it, and both sockets are served
    assert.equal(provider.count('/rotate'), 2);
    assert.equal(fresh.connected, true);
    await joinRoom(live, uid('room'));
    assert.deepEqual(live.inbox.all('disconnect'), []);

    // Act: 40 tokens naming random kids (signed with a key the provider never published)
    const stranger = keyPair('RS256');
    const flood = await Promise.all(
      Array.from({ length: 40 }, () => server.refused(signWith(stranger, { sub: uid('f') }, { kid: randomUUID() }))),
    );
    // Assert: all refused, and the provider saw no further request
    assert.ok(flood.every((e) => e.message === 'Invalid token'));
    assert.equal(provider.count('/rotate'), 2);
    // Tokens of the removed key are refused for new connections (the live one stays)
    assert.equal((await server.refused(signWith(oldKey, { sub: uid('old') }))).message, 'Invalid token');
    assert.equal(provider.count('/rotate'), 2);
    assert.equal(live.connected, true);
  });
});

describe('JWKS: provider down', () => {
  test('down at start: the node listens but is not ready and refuses tokens; ready once the keys come; down later: cached keys keep working', { timeout: 30000 }, async () => {
    const server = servers.down;
    const key = keyPair('RS256');
    // Assert (down at start)
    const notReady = await request(`${server.url}/readyz`);
    assert.equal(notReady.status, 503);
    assert.equal(notReady.json.jwks.status, 'unavailable');
    assert.equal(typeof notReady.json.jwks.error, 'string');
    assert.equal((await server.refused(signWith(key, { sub: uid('early') }))).message, 'Invalid token');
    assert.match((await request(`${server.url}/metrics`)).body, /^aegisx_jwks_up 0$/m);

    // Act: the provider comes up (max-age 1 s, bounded to the 1 s configured)
    provider.set('/down', { keys: [key], cacheControl: 'public, max-age=1' });
    const ready = await readyzUntil(server, (r) => r.status === 200);
    // Assert
    assert.equal(ready.json.jwks.status, 'ok');
    const live = await server.connect(signWith(key, { sub: uid('live') }));

    // Act: the provider goes down again
    provider.set('/down', { status: 500 });
    const stale = await readyzUntil(server, (r) => r.json?.jwks?.status === 'stale');
    // Assert: still ready, cached keys verify new tokens, the live socket stays
    assert.equal(stale.status, 200);
    assert.match(stale.json.jwks.error, /500/);
    assert.match((await request(`${server.url}/metrics`)).body, /^aegisx_jwks_up 0$/m);
    const late = await server.connect(signWith(key, { sub: uid('late') }));
    assert.equal(late.connected, true);
    await joinRoom(live, uid('room'));
  });
});

describe('check-config and token with a JWKS', () => {
  test('check-config names the JWKS mode and the key ids it fetched', async () => {
    // Act
    const { stdout } = await run(BIN, ['check-config'], {
      env: { PATH: process.env.PATH, JWT_JWKS_URL: provider.url('/all'), JWT_ALGORITHM: 'ES256' },
      timeout: WAIT_MS,
    });
    // Assert
    assert.match(stdout, /JWKS from http:\/\/127\.0\.0\.1:\d+\/all/);
    assert.ok(stdout.includes(JSON.stringify([ec.kid])), stdout);
  });

  test('check-config fails when the provider is down', async () => {
    // Act + Assert
    await assert.rejects(
      run(BIN, ['check-config'], { env: { PATH: process.env.PATH, JWT_JWKS_URL: provider.url('/missing') }, timeout: WAIT_MS }),
      (e) => /JWT_JWKS_URL: HTTP status 404/.test(e.stderr),
    );
  });
});
