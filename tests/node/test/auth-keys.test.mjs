// PROTOCOL.md §2 verification settings: RS256/ES256 with JWT_PUBLIC_KEY_FILE (the algorithm is
// pinned by configuration, never taken from the token), and iss/aud checked when
// JWT_ISSUER/JWT_AUDIENCE are set.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import jwt from 'jsonwebtoken';

import { nowSecs, signToken, startServer, uid, unsignedToken } from './helpers.mjs';

const ISSUER = 'https://issuer.test';
const AUDIENCE = 'aegisx-realtime';

const pair = (type, opts) => {
  const { publicKey, privateKey } = generateKeyPairSync(type, opts);
  return {
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }),
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }),
  };
};
const rsa = pair('rsa', { modulusLength: 2048 });
const otherRsa = pair('rsa', { modulusLength: 2048 });
const ec = pair('ec', { namedCurve: 'P-256' });

const sign = (claims, key, algorithm) => jwt.sign({ exp: nowSecs() + 3600, ...claims }, key, { algorithm, noTimestamp: true });

let dir;
let rsaServer;
let ecServer;
let issAud;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'aegisx-keys-'));
  await writeFile(join(dir, 'rsa.pub.pem'), rsa.publicPem);
  await writeFile(join(dir, 'ec.pub.pem'), ec.publicPem);
  [rsaServer, ecServer, issAud] = await Promise.all([
    startServer({ JWT_SECRET: undefined, JWT_PUBLIC_KEY_FILE: join(dir, 'rsa.pub.pem') }),
    startServer({ JWT_SECRET: undefined, JWT_PUBLIC_KEY_FILE: join(dir, 'ec.pub.pem') }),
    startServer({ JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE }),
  ]);
});
afterEach(() => [rsaServer, ecServer, issAud].forEach((s) => s.closeClients()));
after(async () => {
  await Promise.all([rsaServer.stop(), ecServer.stop(), issAud.stop()]);
  await rm(dir, { recursive: true, force: true });
});

describe('RS256 with JWT_PUBLIC_KEY_FILE', () => {
  test('an RS256 token signed with the matching private key is accepted', async () => {
    // Arrange
    const sub = uid('rs');
    // Act
    const socket = await rsaServer.connect(sign({ sub }, rsa.privatePem, 'RS256'));
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
  });

  test('an RS256 token signed with another private key is refused with "Invalid token"', async () => {
    // Act
    const err = await rsaServer.refused(sign({ sub: uid('rs') }, otherRsa.privatePem, 'RS256'));
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('an HS256 token keyed with the public key PEM (algorithm confusion) is refused with "Invalid token"', async () => {
    // Arrange: jsonwebtoken refuses PEM-looking HMAC keys, so sign by hand
    const { createHmac } = await import('node:crypto');
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: uid('conf'), exp: nowSecs() + 3600 })}`;
    const token = `${input}.${createHmac('sha256', rsa.publicPem).update(input).digest('base64url')}`;
    // Act
    const err = await rsaServer.refused(token);
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('an HS256 token with the shared test secret is refused when the server is configured for RS256', async () => {
    // Act
    const err = await rsaServer.refused(signToken({ sub: uid('hs') }));
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('an alg none token is refused with "Invalid token"', async () => {
    // Act
    const err = await rsaServer.refused(unsignedToken({ sub: uid('none'), exp: nowSecs() + 3600 }));
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('an expired RS256 token is refused with "Token expired"', async () => {
    // Act
    const err = await rsaServer.refused(sign({ sub: uid('rs'), exp: nowSecs() - 120 }, rsa.privatePem, 'RS256'));
    // Assert
    assert.equal(err.message, 'Token expired');
  });
});

describe('ES256 with JWT_PUBLIC_KEY_FILE', () => {
  test('an ES256 token signed with the matching private key is accepted', async () => {
    // Arrange
    const sub = uid('es');
    // Act
    const socket = await ecServer.connect(sign({ sub }, ec.privatePem, 'ES256'));
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
  });

  test('an RS256 token is refused by a server pinned to ES256', async () => {
    // Act
    const err = await ecServer.refused(sign({ sub: uid('rs') }, rsa.privatePem, 'RS256'));
    // Assert
    assert.equal(err.message, 'Invalid token');
  });
});

describe('issuer and audience', () => {
  test('a token with the configured iss and aud is accepted', async () => {
    // Arrange
    const sub = uid('ia');
    // Act
    const socket = await issAud.connect(signToken({ sub, iss: ISSUER, aud: AUDIENCE }));
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
  });

  test('a token with another iss is refused with "Invalid token"', async () => {
    // Act
    const err = await issAud.refused(signToken({ sub: uid('ia'), iss: 'https://evil.test', aud: AUDIENCE }));
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('a token with another aud is refused with "Invalid token"', async () => {
    // Act
    const err = await issAud.refused(signToken({ sub: uid('ia'), iss: ISSUER, aud: 'another-service' }));
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('a token without iss is refused with "Invalid token" when JWT_ISSUER is set', async () => {
    // Act
    const err = await issAud.refused(signToken({ sub: uid('ia'), aud: AUDIENCE }));
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('a token without aud is refused with "Invalid token" when JWT_AUDIENCE is set', async () => {
    // Act
    const err = await issAud.refused(signToken({ sub: uid('ia'), iss: ISSUER }));
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('a refresh token without iss is refused with INVALID_TOKEN when JWT_ISSUER is set', async () => {
    // Arrange
    const sub = uid('ia');
    const socket = await issAud.connect(signToken({ sub, iss: ISSUER, aud: AUDIENCE }));
    // Act
    const res = await socket.timeout(5000).emitWithAck('refresh_token', { token: signToken({ sub, aud: AUDIENCE }) });
    // Assert
    assert.equal(res.ok, false);
    assert.equal(res.error.code, 'INVALID_TOKEN');
  });
});
