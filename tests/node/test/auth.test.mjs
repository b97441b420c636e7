// PROTOCOL.md §2 and §11 (token): where the token is read from, in which order, and how a
// refusal looks to the official client.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { nowSecs, openRawWebSocket, signToken, startServer, uid, unsignedToken } from './helpers.mjs';

let server;
before(async () => {
  server = await startServer();
});
afterEach(() => server.closeClients());
after(() => server.stop());

const bearer = (t) => ({ Authorization: `Bearer ${t}` });

describe('token sources', () => {
  test('a token in the Authorization Bearer header is accepted over polling', async () => {
    // Arrange
    const sub = uid('hdr');
    const token = server.token({ sub });
    // Act
    const socket = await server.connect(undefined, { transports: ['polling'], extraHeaders: bearer(token) });
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
    assert.equal(socket.io.engine.transport.name, 'polling');
  });

  test('a token in the Authorization Bearer header is accepted over websocket', async () => {
    // Arrange
    const sub = uid('hdr');
    const token = server.token({ sub });
    // Act
    const socket = await server.connect(undefined, {
      transports: ['websocket'],
      transportOptions: { websocket: { extraHeaders: bearer(token) } },
    });
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
    assert.equal(socket.io.engine.transport.name, 'websocket');
  });

  test('a token in the token query parameter is accepted', async () => {
    // Arrange
    const sub = uid('query');
    const token = server.token({ sub });
    // Act
    const socket = await server.connect(undefined, { query: { token } });
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
  });

  test('a token in the auth payload is accepted', async () => {
    // Arrange
    const sub = uid('auth');
    // Act
    const socket = await server.connect(server.token({ sub }));
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
  });
  test('the Bearer scheme is matched case-insensitively (RFC 7235)', async () => {
    // Arrange
    const sub = uid('lower');
    // Act
    const socket = await server.connect(undefined, {
      transports: ['polling'],
      extraHeaders: { Authorization: `bearer ${server.token({ sub })}` },
    });
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
  });
});

describe('token precedence', () => {
  test('the header wins over the query parameter and the auth payload', async () => {
    // Arrange
    const [h, q, a] = [uid('h'), uid('q'), uid('a')];
    // Act
    const socket = await server.connect(server.token({ sub: a }), {
      transports: ['polling'],
      extraHeaders: bearer(server.token({ sub: h })),
      query: { token: server.token({ sub: q }) },
    });
    // Assert
    assert.equal(socket.connectedPayload.userId, h);
  });

  test('the query parameter wins over the auth payload', async () => {
    // Arrange
    const [q, a] = [uid('q'), uid('a')];
    // Act
    const socket = await server.connect(server.token({ sub: a }), { query: { token: server.token({ sub: q }) } });
    // Assert
    assert.equal(socket.connectedPayload.userId, q);
  });

  test('the first present source wins even when it is invalid and a later one is valid', async () => {
    // Arrange
    const valid = server.token();
    // Act
    const err = await server.refused(valid, { query: { token: 'not-a-jwt' } });
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('an invalid header token is refused although the auth payload holds a valid one', async () => {
    // Arrange
    const valid = server.token();
    // Act
    const err = await server.refused(valid, { transports: ['polling'], extraHeaders: bearer('garbage') });
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('an empty Bearer header counts as absent and the next source is used', async () => {
    // Arrange
    const sub = uid('next');
    // Act
    const socket = await server.connect(undefined, {
      transports: ['polling'],
      extraHeaders: { Authorization: 'Bearer ' },
      query: { token: server.token({ sub }) },
    });
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
  });

  test('a non-Bearer Authorization header counts as absent and the next source is used', async () => {
    // Arrange
    const sub = uid('basic');
    // Act
    const socket = await server.connect(server.token({ sub }), {
      transports: ['polling'],
      extraHeaders: { Authorization: `Basic ${Buffer.from('a:b').toString('base64')}` },
    });
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
  });

  test('an empty token query parameter counts as absent and the auth payload is used', async () => {
    // Arrange
    const sub = uid('emptyq');
    // Act
    const socket = await server.connect(server.token({ sub }), { query: { token: '' } });
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
  });
});

describe('refusals', () => {
  test('a connection without any token is refused with "No token provided"', async () => {
    // Act
    const err = await server.refused(undefined);
    // Assert
    assert.equal(err.message, 'No token provided');
  });

  test('an empty auth token is refused with "No token provided"', async () => {
    // Act
    const err = await server.refused('');
    // Assert
    assert.equal(err.message, 'No token provided');
  });

  test('a non-Bearer header alone is refused with "No token provided"', async () => {
    // Act
    const err = await server.refused(undefined, {
      transports: ['polling'],
      extraHeaders: { Authorization: `Token ${server.token()}` },
    });
    // Assert
    assert.equal(err.message, 'No token provided');
  });

  test('a malformed token is refused with "Invalid token"', async () => {
    // Act
    const err = await server.refused('not.a.jwt');
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('a token signed with another secret is refused with "Invalid token"', async () => {
    // Arrange
    const token = signToken({ sub: uid('u') }, { secret: 'another-secret-another-secret-another-secret' });
    // Act
    const err = await server.refused(token);
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('an unsigned alg none token is refused with "Invalid token"', async () => {
    // Arrange
    const token = unsignedToken({ sub: uid('u'), exp: nowSecs() + 3600 });
    // Act
    const err = await server.refused(token);
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('a token signed with another HMAC algorithm than the pinned HS256 is refused', async () => {
    // Arrange
    const token = signToken({ sub: uid('u') }, { algorithm: 'HS512' });
    // Act
    const err = await server.refused(token);
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  for (const [what, claims] of [
    ['missing', { sub: undefined }],
    ['empty', { sub: '' }],
    ['a number', { sub: 12345 }],
    ['longer than 128 characters', { sub: 'x'.repeat(129) }],
  ]) {
    test(`a token whose sub is ${what} is refused with "Invalid token"`, async () => {
      // Arrange
      const token = signToken(claims);
      // Act
      const err = await server.refused(token);
      // Assert
      assert.equal(err.message, 'Invalid token');
    });
  }

  test('a sub of exactly 128 characters is accepted', async () => {
    // Arrange
    const sub = 'u'.repeat(120) + uid('').slice(-8);
    assert.equal(sub.length, 128);
    // Act
    const socket = await server.connect(signToken({ sub }));
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
  });

  test('a token whose nbf is in the future beyond the leeway is refused with "Invalid token"', async () => {
    // Arrange
    const token = server.token({ nbf: nowSecs() + 120 });
    // Act
    const err = await server.refused(token);
    // Assert
    assert.equal(err.message, 'Invalid token');
  });

  test('a token whose exp passed more than 30 seconds ago is refused with "Token expired"', async () => {
    // Arrange
    const token = server.token({ exp: nowSecs() - 90 });
    // Act
    const err = await server.refused(token);
    // Assert
    assert.equal(err.message, 'Token expired');
  });

  test('a token whose exp passed within the 30 second leeway is accepted', async () => {
    // Arrange
    const sub = uid('leeway');
    // Act
    const socket = await server.connect(server.token({ sub, exp: nowSecs() - 10 }));
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
  });

  test('a token without exp is accepted (exp is checked only when present)', async () => {
    // Arrange
    const sub = uid('noexp');
    // Act
    const socket = await server.connect(server.token({ sub, exp: undefined }));
    // Assert
    assert.equal(socket.connectedPayload.userId, sub);
  });

  test('a refusal over polling reaches the client as the same connect_error message', async () => {
    // Act
    const err = await server.refused(server.token({ exp: nowSecs() - 90 }), { transports: ['polling'] });
    // Assert
    assert.equal(err.message, 'Token expired');
  });

  test('a refusal is a Socket.IO CONNECT_ERROR packet whose data is exactly { message }', async () => {
    // Arrange
    const raw = await openRawWebSocket(server.url);
    // Act
    raw.ws.send('40/ws,{"token":"garbage"}');
    const reply = await raw.next((m) => m.startsWith('44'));
    // Assert
    assert.equal(reply.slice(0, 6), '44/ws,');
    assert.deepEqual(JSON.parse(reply.slice(6)), { message: 'Invalid token' });
    raw.ws.close();
  });

  test('a namespace other than /ws is not served: connecting to it fails with connect_error', async () => {
    // Act
    const err = await server.refused(server.token(), { namespace: '/admin' });
    // Assert
    assert.ok(err instanceof Error);
  });

  test('the main namespace "/" is not served: connecting to it fails with connect_error', async () => {
    // Arrange
    const token = server.token();
    // Act
    const err = await server.refused(token, { namespace: '' });
    // Assert
    assert.ok(err instanceof Error);
  });
});
