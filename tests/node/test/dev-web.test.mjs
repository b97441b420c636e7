// `serve --dev` for the web demo: the development sign-in (`POST /dev/token`, dev mode only),
// the printed development API key, and the built demo served at `/` behind every other route.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import jwt from 'jsonwebtoken';

import { request, startServer, withTimeout, WAIT_MS } from './helpers.mjs';

/** Resolves with the first match of `re` in the server's stdout, waiting for it to be printed. */
function stdoutMatch(server, re) {
  return withTimeout(
    new Promise((resolve) => {
      const check = () => {
        const m = server.stdout().match(re);
        if (m) {
          server.child.stdout.off('data', onData);
          resolve(m);
        }
      };
      const onData = () => queueMicrotask(check);
      server.child.stdout.on('data', onData);
      check();
    }),
    WAIT_MS,
    `stdout matching ${re}`,
  );
}

describe('serve --dev', () => {
  let server;
  before(async () => {
    server = await startServer({ API_KEYS: undefined }, { args: ['--dev'] });
  });
  after(() => server.stop());

  test('POST /dev/token mints a token of tenant demo whose sub is the typed name', async () => {
    const res = await request(`${server.url}/dev/token`, { method: 'POST', body: { name: 'Zoë Smith' } });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.json.userId, 'Zoë Smith');
    assert.equal(res.json.tenantId, 'demo');
    const claims = jwt.decode(res.json.token);
    assert.equal(claims.sub, 'Zoë Smith');
    assert.equal(claims.tenantId, 'demo');
    assert.equal(claims.exp, res.json.exp);
    const socket = await server.connect(res.json.token);
    assert.equal(socket.connectedPayload.userId, 'Zoë Smith');
  });

  test('a blank, missing or too long name is refused with 400', async () => {
    for (const body of [{ name: '' }, { name: '   ' }, {}, { name: 'x'.repeat(129) }]) {
      const res = await request(`${server.url}/dev/token`, { method: 'POST', body });
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.json.error.code, 'INVALID_PAYLOAD');
    }
  });

  test('the demo reads history and unread notifications with a development token', async () => {
    const { token } = (await request(`${server.url}/dev/token`, { method: 'POST', body: { name: 'reader' } })).json;
    const auth = { authorization: `Bearer ${token}` };
    const [, key] = await stdoutMatch(server, /H='Authorization: Bearer ([^']+)'/);
    const api = { authorization: `Bearer ${key}` };
    for (const message of ['one', 'two', 'three']) {
      const r = await request(`${server.url}/api/v1/rooms/dev-room/messages`, { method: 'POST', headers: api, body: { tenantId: 'demo', userId: 'bot', message } });
      assert.equal(r.status, 201);
    }
    // Another tenant's room of the same name stays invisible.
    await request(`${server.url}/api/v1/rooms/dev-room/messages`, { method: 'POST', headers: api, body: { tenantId: 'other', userId: 'bot', message: 'secret' } });
    const page = await request(`${server.url}/dev/rooms/dev-room/messages?limit=2`, { headers: auth });
    assert.equal(page.status, 200, page.body);
    assert.deepEqual(page.json.messages.map((m) => m.message), ['two', 'three']);
    const older = await request(`${server.url}/dev/rooms/dev-room/messages?limit=2&before=${page.json.nextBefore}`, { headers: auth });
    assert.deepEqual(older.json.messages.map((m) => m.message), ['one']);
    assert.equal((await request(`${server.url}/dev/rooms/dev-room/messages`)).status, 401);
    assert.equal((await request(`${server.url}/dev/rooms/private:x/messages`, { headers: auth })).status, 403);

    await request(`${server.url}/api/v1/notifications`, { method: 'POST', headers: api, body: { userId: 'reader', tenantId: 'demo', title: 't', message: 'mine', type: 'info' } });
    await request(`${server.url}/api/v1/notifications`, { method: 'POST', headers: api, body: { userId: 'reader', tenantId: 'other', title: 't', message: 'not here', type: 'info' } });
    const unread = await request(`${server.url}/dev/notifications`, { headers: auth });
    assert.equal(unread.status, 200, unread.body);
    assert.deepEqual(unread.json.notifications.map((n) => n.message), ['mine']);
    assert.equal((await request(`${server.url}/dev/notifications`)).status, 401);
  });

  test('prints a development API key that opens the HTTP API as the README shows', async () => {
    const [, key, base] = await stdoutMatch(server, /H='Authorization: Bearer ([^']+)'; B=(\S+)/);
    assert.match(base, /^http:\/\/localhost:\d+\/api\/v1$/);
    const res = await request(`${server.url}/api/v1/stats`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(res.status, 200, res.body);
    const wrong = await request(`${server.url}/api/v1/stats`, { headers: { authorization: 'Bearer nope' } });
    assert.equal(wrong.status, 401);
  });
});

describe('without --dev', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server.stop());

  test('there is no development sign-in nor dev reads (404)', async () => {
    const res = await request(`${server.url}/dev/token`, { method: 'POST', body: { name: 'mallory' } });
    assert.equal(res.status, 404);
    assert.equal(res.json?.token, undefined);
    const auth = { authorization: `Bearer ${server.token({ tenantId: 'demo' })}` };
    assert.equal((await request(`${server.url}/dev/rooms/general/messages`, { headers: auth })).status, 404);
    assert.equal((await request(`${server.url}/dev/notifications`, { headers: auth })).status, 404);
  });

  test('/ is 404 when no web demo is built', async () => {
    const res = await request(`${server.url}/`);
    assert.equal(res.status, 404);
  });
});

describe('the built web demo at /', () => {
  let server;
  let dir;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'aegisx-web-'));
    await writeFile(join(dir, 'index.html'), '<!doctype html><title>demo</title><div id="root"></div>');
    await writeFile(join(dir, 'app.js'), 'console.log(1)');
    // A file named like a route must not shadow it.
    await writeFile(join(dir, 'healthz'), 'shadowed');
    server = await startServer({ WEB_DIR: dir, API_KEYS: 'k1' });
  });
  after(async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('serves index.html at / and the assets beside it', async () => {
    const root = await request(`${server.url}/`);
    assert.equal(root.status, 200);
    assert.match(root.headers['content-type'], /text\/html/);
    assert.match(root.body, /<title>demo<\/title>/);
    const js = await request(`${server.url}/app.js`);
    assert.equal(js.status, 200);
    assert.match(js.headers['content-type'], /javascript/);
    assert.equal((await request(`${server.url}/missing.js`)).status, 404);
  });

  test('the API, health, metrics and Socket.IO keep priority', async () => {
    const health = await request(`${server.url}/healthz`);
    assert.equal(health.status, 200);
    assert.notEqual(health.body, 'shadowed');
    assert.equal((await request(`${server.url}/metrics`)).status, 200);
    const api = await request(`${server.url}/api/v1/nothing-here`, { headers: { authorization: 'Bearer k1' } });
    assert.equal(api.status, 404);
    assert.equal(api.json.error.code, 'NOT_FOUND');
    assert.equal((await request(`${server.url}/api/v1/stats`)).status, 401);
    const socket = await server.connect(server.token());
    assert.ok(socket.connectedPayload.connectionId);
  });
});
