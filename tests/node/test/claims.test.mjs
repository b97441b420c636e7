// Claim mapping (JWT_CLAIM_*): identity providers' own claim layouts, flat (Cognito
// `custom:tenant`), namespaced (Auth0 `https://example.com/tenant`) and nested JSON pointers
// (Keycloak `/realm_access/roles`), and key rotation without a JWKS (several JWT_SECRET
// entries, JWT_KEY_IDS, a PEM bundle).

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import jwt from 'jsonwebtoken';

import { BIN, SECRET, WAIT_MS, chat, joinRoom, nowSecs, request, signToken, startServer, uid } from './helpers.mjs';

const API_KEY = 'claims-test-api-key';
const OLD_SECRET = 'the-previous-secret-of-at-least-32-bytes!';

let keycloak;
let auth0;
let cognito;
let rolled;
let named;
let bundle;
let dir;
const rsa1 = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsa2 = generateKeyPairSync('rsa', { modulusLength: 2048 });
const pem = (k) => k.export({ type: 'spki', format: 'pem' });

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'aegisx-claims-'));
  await writeFile(join(dir, 'bundle.pem'), `${pem(rsa1.publicKey)}\n${pem(rsa2.publicKey)}`);
  [keycloak, auth0, cognito, rolled, named, bundle] = await Promise.all([
    // Keycloak: a `tenant` mapper, the username, roles and groups nested under realm_access
    startServer({
      API_KEYS: API_KEY,
      JWT_CLAIM_USER_ID: 'preferred_username',
      JWT_CLAIM_TENANT: 'tenant',
      JWT_CLAIM_ROLES: '/realm_access/roles',
      JWT_CLAIM_ROOMS: '/resource_access/aegisx/rooms',
    }),
    // Auth0: namespaced custom claims
    startServer({
      API_KEYS: API_KEY,
      JWT_CLAIM_TENANT: 'https://example.com/tenant',
      JWT_CLAIM_NAME: 'https://example.com/display_name',
    }),
    startServer({ API_KEYS: API_KEY, JWT_CLAIM_TENANT: 'custom:tenant' }),
    startServer({ JWT_SECRET: `${SECRET},${OLD_SECRET}` }),
    startServer({ JWT_SECRET: `${SECRET},${OLD_SECRET}`, JWT_KEY_IDS: 'current,previous' }),
    startServer({ JWT_SECRET: undefined, JWT_PUBLIC_KEY_FILE: join(dir, 'bundle.pem') }),
  ]);
});
afterEach(() => [keycloak, auth0, cognito, rolled, named, bundle].forEach((s) => s.closeClients()));
after(async () => {
  await Promise.all([keycloak, auth0, cognito, rolled, named, bundle].map((s) => s.stop()));
  await rm(dir, { recursive: true, force: true });
});

async function tenantCount(server, tenantId) {
  const res = await request(`${server.url}/api/v1/stats`, { headers: { authorization: `Bearer ${API_KEY}` } });
  assert.equal(res.status, 200);
  return res.json.tenants[tenantId] ?? 0;
}

describe('claim mapping', () => {
  test('Keycloak layout: user id from preferred_username, flat tenant, private rooms from a nested claim', async () => {
    // Arrange
    const user = uid('kc');
    const tenant = uid('t');
    const room = `private:${uid('p')}`;
    const token = signToken({
      sub: randomLikeUuid(),
      preferred_username: user,
      tenant,
      realm_access: { roles: ['offline_access', 'chat-user'] },
      resource_access: { aegisx: { rooms: [room] } },
    });
    // Act
    const socket = await keycloak.connect(token);
    // Assert
    assert.equal(socket.connectedPayload.userId, user);
    assert.equal(await tenantCount(keycloak, tenant), 1);
    await joinRoom(socket, room);
  });

  test('Auth0 layout: namespaced tenant and display name', async () => {
    // Arrange
    const tenant = uid('t');
    const room = uid('room');
    const token = signToken({
      sub: `auth0|${uid('a0')}`,
      'https://example.com/tenant': tenant,
      'https://example.com/display_name': 'Ada Lovelace',
      name: 'not this one',
    });
    // Act
    const socket = await auth0.connect(token);
    await joinRoom(socket, room);
    await chat(socket, room, 'hello');
    // Assert
    assert.equal((await socket.inbox.next('chat_message')).userName, 'Ada Lovelace');
    assert.equal(await tenantCount(auth0, tenant), 1);
  });

  test('Cognito layout: a flat claim with a colon', async () => {
    // Arrange
    const tenant = uid('t');
    // Act
    await cognito.connect(signToken({ sub: uid('c'), 'custom:tenant': tenant, tenantId: 'ignored' }));
    // Assert
    assert.equal(await tenantCount(cognito, tenant), 1);
    assert.equal(await tenantCount(cognito, 'ignored'), 0);
  });

  test('validation stays strict: a missing or malformed mapped user id is "Invalid token", whatever sub says', async () => {
    // Act
    const errs = [
      await keycloak.refused(signToken({ sub: uid('u') })),
      await keycloak.refused(signToken({ sub: uid('u'), preferred_username: 7 })),
      await keycloak.refused(signToken({ preferred_username: 'x'.repeat(129) })),
      await auth0.refused(signToken({ sub: uid('u'), 'https://example.com/tenant': ['not', 'a', 'string'] })),
    ];
    // Assert
    assert.deepEqual(errs.map((e) => e.message), Array(4).fill('Invalid token'));
  });

  test('`token` mints with the mapped claim names, and the server accepts it', async () => {
    // Arrange
    const user = uid('minted');
    const tenant = uid('t');
    const env = {
      PATH: process.env.PATH,
      JWT_SECRET: SECRET,
      JWT_CLAIM_USER_ID: 'preferred_username',
      JWT_CLAIM_TENANT: 'tenant',
      JWT_CLAIM_ROOMS: '/resource_access/aegisx/rooms',
    };
    // Act
    const { stdout } = await promisify(execFile)(BIN, ['token', '--sub', user, '--tenant', tenant, '--rooms', 'private:r'], { env, timeout: WAIT_MS });
    const token = stdout.trim();
    // Assert
    const claims = jwt.decode(token);
    assert.equal(claims.preferred_username, user);
    assert.equal(claims.tenant, tenant);
    assert.deepEqual(claims.resource_access, { aegisx: { rooms: ['private:r'] } });
    const socket = await keycloak.connect(token);
    assert.equal(socket.connectedPayload.userId, user);
  });
});

describe('rotation without a JWKS', () => {
  test('with two JWT_SECRET entries, tokens of either verify and others are refused', async () => {
    // Act + Assert
    await rolled.connect(signToken({ sub: uid('new') }));
    await rolled.connect(signToken({ sub: uid('old') }, { secret: OLD_SECRET }));
    const err = await rolled.refused(signToken({ sub: uid('x') }, { secret: 'a-third-secret-nobody-configured-32b!' }));
    assert.equal(err.message, 'Invalid token');
  });

  test('with JWT_KEY_IDS a token naming a kid is checked with that key only', async () => {
    // Arrange
    const claims = () => ({ sub: uid('k'), exp: nowSecs() + 3600 });
    const sign = (secret, keyid) => jwt.sign(claims(), secret, { algorithm: 'HS256', noTimestamp: true, ...(keyid ? { keyid } : {}) });
    // Act + Assert
    await named.connect(sign(OLD_SECRET, 'previous'));
    await named.connect(sign(OLD_SECRET)); // no kid: tried in order
    assert.equal((await named.refused(sign(OLD_SECRET, 'current'))).message, 'Invalid token');
    assert.equal((await named.refused(sign(SECRET, 'unknown'))).message, 'Invalid token');
  });

  test('a PEM bundle verifies tokens of each of its keys', async () => {
    // Act + Assert
    for (const k of [rsa1, rsa2]) {
      const t = jwt.sign({ sub: uid('pem'), exp: nowSecs() + 3600 }, k.privateKey.export({ type: 'pkcs8', format: 'pem' }), { algorithm: 'RS256', noTimestamp: true });
      await bundle.connect(t);
    }
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    const t = jwt.sign({ sub: uid('pem'), exp: nowSecs() + 3600 }, other, { algorithm: 'RS256', noTimestamp: true });
    assert.equal((await bundle.refused(t)).message, 'Invalid token');
  });
});

function randomLikeUuid() {
  return `${uid('x')}-0000-4000-8000-000000000000`;
}
