// Test harness for the black-box suite: starts the gateway binary on a free port with a fresh
// SQLite database, mints tokens, connects the official socket.io-client, and turns events into
// promises (every wait has a timeout that fails the test; nothing sleeps for a fixed time).

import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

import jwt from 'jsonwebtoken';
import { io } from 'socket.io-client';

const here = dirname(fileURLToPath(import.meta.url));

export const BIN =
  process.env.AEGISX_BIN ?? resolve(here, '../../../target/debug/aegisx-realtime');

/** The HS256 secret every test server is started with (32+ bytes). */
export const SECRET = 'aegisx-black-box-test-secret-0123456789abcdef';

/** Default wait for one event before the test fails. */
export const WAIT_MS = 5000;

/** RFC 3339 timestamp in UTC (`Z` or `+00:00`). */
export const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$/;

let counter = 0;
/** A unique id for users, tenants and rooms, so tests never share state by accident. */
export function uid(prefix = 'id') {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
}

export function nowSecs() {
  return Math.floor(Date.now() / 1000);
}

/**
 * How the servers of this process verify tokens: `secret` (HS256 with SECRET, the default),
 * `pem` (RS256 with JWT_PUBLIC_KEY_FILE) or `jwks` (RS256 from a JWKS served here). Set
 * AEGISX_KEY_MODE before importing a suite to run it in another mode (see auth-jwks.test.mjs).
 */
export const KEY_MODE = process.env.AEGISX_KEY_MODE ?? 'secret';

let modeKey;
function modeKeyPair() {
  if (!modeKey) {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const kid = randomUUID();
    modeKey = {
      kid,
      privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }),
      publicPem: publicKey.export({ type: 'spki', format: 'pem' }),
      jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' },
    };
  }
  return modeKey;
}

let modeProvider;
/** The JWKS endpoint of the `jwks` mode (one per test process, never keeping it alive). */
async function modeJwksUrl() {
  if (!modeProvider) {
    const body = JSON.stringify({ keys: [modeKeyPair().jwk] });
    const server = http.createServer((_, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    });
    modeProvider = new Promise((r) => server.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${server.address().port}/jwks`)));
    server.unref();
  }
  return modeProvider;
}

/** The key settings of KEY_MODE, unless the test configures its own key. */
async function modeEnv(env) {
  const own = ['JWT_SECRET', 'JWT_PUBLIC_KEY_FILE', 'JWT_JWKS_URL'].some((k) => k in env);
  if (KEY_MODE === 'secret' || own) return {};
  if (KEY_MODE === 'jwks') return { JWT_SECRET: undefined, JWT_JWKS_URL: await modeJwksUrl() };
  const file = join(await mkdtemp(join(tmpdir(), 'aegisx-pem-')), 'key.pem');
  await writeFile(file, modeKeyPair().publicPem);
  return { JWT_SECRET: undefined, JWT_PUBLIC_KEY_FILE: file };
}

/**
 * Signs claims for this process's servers (`exp` defaults to +1 h): HS256 with the server's
 * secret, or RS256 in the `pem`/`jwks` modes; with `secret` or `algorithm` given, HS* as asked.
 */
export function signToken(claims = {}, { secret, algorithm } = {}) {
  const payload = { exp: nowSecs() + 3600, ...claims };
  for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
  if (KEY_MODE !== 'secret' && secret === undefined && algorithm === undefined) {
    const k = modeKeyPair();
    return jwt.sign(payload, k.privatePem, { algorithm: 'RS256', noTimestamp: true, keyid: k.kid });
  }
  return jwt.sign(payload, secret ?? SECRET, { algorithm: algorithm ?? 'HS256', noTimestamp: true });
}

/** A token with `alg: none` and no signature. */
export function unsignedToken(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
}

/** Rejects after `ms` with a message naming what was awaited. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A predicate that throws (e.g. on an unexpected payload shape) does not match. */
function safe(pred, data) {
  try {
    return Boolean(pred(data));
  } catch {
    return false;
  }
}

/**
 * Every event a socket receives, in arrival order, recorded from the socket's creation (so no
 * listener is ever registered too late). `next` consumes the first unconsumed match, waiting for
 * it when it has not arrived yet.
 */
export class Inbox {
  constructor(socket) {
    this.events = []; // { event, data, consumed }
    this.waiters = [];
    socket.onAny((event, ...args) => this.push(event, args[0]));
    socket.on('connect_error', (err) => this.push('connect_error', err));
    socket.on('disconnect', (reason) => this.push('disconnect', reason));
  }

  push(event, data) {
    const entry = { event, data, consumed: false, index: this.events.length };
    this.events.push(entry);
    for (const w of [...this.waiters]) {
      if (!entry.consumed && w.event === event && safe(w.pred, data)) {
        entry.consumed = true;
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(data);
      }
    }
  }

  /** The first unconsumed `event` whose payload satisfies `pred`. */
  next(event, pred = () => true, ms = WAIT_MS) {
    const found = this.events.find((e) => !e.consumed && e.event === event && safe(pred, e.data));
    if (found) {
      found.consumed = true;
      return Promise.resolve(found.data);
    }
    let waiter;
    const p = new Promise((resolve) => {
      waiter = { event, pred, resolve };
      this.waiters.push(waiter);
    });
    return withTimeout(p, ms, `event "${event}"`).catch((e) => {
      const i = this.waiters.indexOf(waiter);
      if (i >= 0) this.waiters.splice(i, 1);
      throw e;
    });
  }

  /** Payloads of every `event` received so far (consumed or not). */
  all(event, pred = () => true) {
    return this.events.filter((e) => e.event === event && safe(pred, e.data)).map((e) => e.data);
  }

  /** Unconsumed `event`s received so far. */
  pending(event) {
    return this.events.filter((e) => !e.consumed && e.event === event).map((e) => e.data);
  }

  /** Index (arrival order) of every `event` received so far. */
  indexes(event, pred = () => true) {
    return this.events.filter((e) => e.event === event && safe(pred, e.data)).map((e) => e.index);
  }
}

/** Emits with an ack and resolves with the ack's payload (fails after `ms`). */
export function ack(socket, event, payload, ms = WAIT_MS) {
  return socket.timeout(ms).emitWithAck(event, payload);
}

/** `message` with an ack. */
export function sendMessage(socket, type, data, ms = WAIT_MS) {
  return ack(socket, 'message', { type, data }, ms);
}

/** Joins a room and asserts success; resolves with the ack. */
export async function joinRoom(socket, roomId, extra = {}) {
  const res = await ack(socket, 'join_room', { roomId, ...extra });
  assert.deepEqual(res, { ok: true, roomId }, `join_room ${roomId}`);
  return res;
}

/** Sends a chat message and asserts success; resolves with the ack `{ ok, id, seq }`. */
export async function chat(socket, roomId, message) {
  const res = await sendMessage(socket, 'send_message', { roomId, message });
  assert.equal(res.ok, true, `send_message failed: ${JSON.stringify(res)}`);
  return res;
}

/** Asserts the contract's `error` event shape. */
export function assertErrorEvent(err, code, message) {
  assert.equal(err.type, 'error');
  assert.equal(err.code, code);
  assert.equal(typeof err.message, 'string');
  if (message !== undefined) assert.equal(err.message, message);
  assert.match(err.timestamp, RFC3339_UTC);
  assert.deepEqual(Object.keys(err).sort(), ['code', 'message', 'timestamp', 'type']);
}

/**
 * Emits `event` with an ack and asserts the failure both ways: the ack is
 * `{ ok: false, error: { code, message } }` and an `error` event with the same code arrives.
 * Resolves with the ack's error.
 */
export async function expectFailure(socket, event, payload, code, message) {
  const res = await ack(socket, event, payload);
  assert.equal(res.ok, false, `expected ${code}, got ${JSON.stringify(res)}`);
  assert.equal(res.error.code, code, `ack: ${JSON.stringify(res)}`);
  if (message !== undefined) assert.equal(res.error.message, message);
  const err = await socket.inbox.next('error', (e) => e?.code === code);
  assertErrorEvent(err, code, message);
  assert.equal(err.message, res.error.message);
  return res.error;
}

/** Resolves when the socket disconnects, with the reason. */
export function disconnected(socket, ms = WAIT_MS) {
  return socket.inbox.next('disconnect', () => true, ms);
}

/** A plain HTTP request; resolves with { status, headers, body, json }. */
export function request(url, { method = 'GET', headers = {}, body } = {}) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
      const h = { ...headers };
      if (data !== undefined && !Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) {
        h['content-type'] = 'application/json';
      }
      const req = http.request(url, { method, headers: h, agent: false }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode, headers: res.headers, body: text, json });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      if (data !== undefined) req.write(data);
      req.end();
    }),
    WAIT_MS,
    `${method} ${url}`,
  );
}

async function waitForBinary() {
  for (let i = 0; i < 600 && !existsSync(BIN); i++) {
    // The lead may be relinking the binary: wait for it to reappear (up to a minute).
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!existsSync(BIN)) throw new Error(`gateway binary not found at ${BIN} (set AEGISX_BIN)`);
}

function spawnOnce(env, args = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['serve', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(new Error(`server did not start in time\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, 30000);
    child.stderr.on('data', (d) => {
      stderr += d;
      if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
    });
    child.stdout.on('data', (d) => {
      stdout += d;
      const m = stdout.match(/aegisx-realtime listening on ([\d.]+):(\d+)/);
      if (m && !settled) {
        settled = true;
        clearTimeout(timer);
        resolve({ child, port: Number(m[2]), stderr: () => stderr, stdout: () => stdout });
      }
    });
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(e);
    });
    child.on('exit', (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? signal}) before listening\nstdout: ${stdout}\nstderr: ${stderr}`));
    });
  });
}

/**
 * Socket.IO clients of `url` (a node or a load balancer), each tracked so `closeClients` ends
 * them all. `client(token, opts)` creates one to `/ws` (or `opts.namespace`) without waiting: by
 * default the token goes in `auth`, over the websocket transport, and `socket.inbox` records
 * every event; `opts.from` connects from that loopback address (127.0.0.0/8 is all local on
 * Linux), so a sticky-by-address balancer sees distinct clients. `connect` resolves once the
 * server's `connected` event arrived (`socket.connectedPayload` holds it) and rejects with the
 * `connect_error` when refused; `refused` resolves with the refusal and fails if it connects.
 */
export function socketClients(url) {
  const sockets = new Set();
  const clients = {
    client(token, opts = {}) {
      const { namespace = '/ws', from, ...rest } = opts;
      const agent = from ? new http.Agent({ localAddress: from, keepAlive: true }) : undefined;
      const options = {
        forceNew: true,
        reconnection: false,
        transports: ['websocket'],
        timeout: WAIT_MS,
        ...(token === undefined ? {} : { auth: { token } }),
        ...(agent ? { agent, localAddress: from } : {}),
        ...rest,
      };
      const socket = io(`${url}${namespace}`, { ...options, autoConnect: false });
      socket.inbox = new Inbox(socket);
      sockets.add(socket);
      socket.connect();
      return socket;
    },
    async connect(token, opts = {}) {
      const socket = clients.client(token, opts);
      const outcome = await withTimeout(
        new Promise((resolve) => {
          const done = () => {
            const c = socket.inbox.events.find((e) => e.event === 'connected');
            const err = socket.inbox.events.find((e) => e.event === 'connect_error');
            if (c) resolve({ connected: c.data });
            else if (err) resolve({ error: err.data });
          };
          socket.onAny(done);
          socket.on('connect_error', () => queueMicrotask(done));
        }),
        opts.timeout ?? WAIT_MS,
        `connected or connect_error from ${url}`,
      );
      if (outcome.error) {
        sockets.delete(socket);
        socket.close();
        throw outcome.error;
      }
      socket.connectedPayload = outcome.connected;
      return socket;
    },
    async refused(token, opts = {}) {
      try {
        const s = await clients.connect(token, opts);
        s.close();
      } catch (err) {
        return err;
      }
      assert.fail(`the connection to ${url} was accepted, expected a connect_error`);
    },
    closeClients() {
      for (const s of sockets) s.close();
      sockets.clear();
    },
  };
  return clients;
}

/**
 * Starts `aegisx-realtime serve` on 127.0.0.1 and a free port with a fresh SQLite database.
 * `env` overrides or adds settings (see src/settings.rs); `args` are extra `serve` flags.
 */
export async function startServer(env = {}, { args = [] } = {}) {
  await waitForBinary();
  const ownDir = env.DATABASE_URL === undefined ? await mkdtemp(join(tmpdir(), 'aegisx-test-')) : null;
  const fullEnv = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOST: '127.0.0.1',
    PORT: '0',
    JWT_SECRET: SECRET,
    DATABASE_URL: ownDir ? `sqlite://${ownDir}/t.db` : undefined,
    LOG_LEVEL: 'warn',
    // Generous by default so only the rate-limit tests meet the limit.
    RATE_LIMIT_PER_MINUTE: '100000',
    ...(await modeEnv(env)),
    // Likewise for the per-IP credential failure limits (abuse.test.mjs sets them): every
    // test client is 127.0.0.1, and several suites send bad tokens and keys on purpose.
    AUTH_FAILURES_PER_IP_PER_MINUTE: '100000',
    API_KEY_FAILURES_PER_IP_PER_MINUTE: '100000',
    // Likewise for the per-connection budgets (budget.test.mjs sets them).
    EVENT_BURST_PER_CONNECTION: '100000',
    MAX_EVENTS_IN_FLIGHT: '100000',
    REPLAY_BURST_PER_CONNECTION: '100000000',
    ...env,
  };
  for (const k of Object.keys(fullEnv)) if (fullEnv[k] === undefined) delete fullEnv[k];
  for (const k of Object.keys(fullEnv)) fullEnv[k] = String(fullEnv[k]);

  let started;
  for (let attempt = 0; ; attempt++) {
    try {
      started = await spawnOnce(fullEnv, args);
      break;
    } catch (e) {
      // ENOENT / ETXTBSY while the binary is being relinked: retry a few times.
      if (attempt < 20 && (e.code === 'ENOENT' || e.code === 'ETXTBSY')) {
        await new Promise((r) => setTimeout(r, 250));
        await waitForBinary();
        continue;
      }
      throw e;
    }
  }
  const { child, port } = started;
  const url = `http://127.0.0.1:${port}`;
  const clients = socketClients(url);
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));

  const server = {
    url,
    port,
    env: fullEnv,
    child,
    exited,
    stderr: started.stderr,
    stdout: started.stdout,

    /** Signs a token; `sub` defaults to a fresh user id, `exp` to +1 h. */
    token(claims = {}, opts = {}) {
      return signToken({ sub: uid('user'), ...claims }, opts);
    },

    ...clients,

    /** SIGTERM and wait for exit (SIGKILL after 10 s). Removes the temp database. */
    async stop({ keepData = false } = {}) {
      clients.closeClients();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
        await exited;
        clearTimeout(timer);
      }
      if (ownDir && !keepData) await rm(ownDir, { recursive: true, force: true });
    },
  };
  return server;
}

/**
 * A raw Engine.IO v4 websocket (package `ws`), for what the official client cannot do: never
 * send CONNECT, send hand-made packets. Resolves once the Engine.IO OPEN packet arrived.
 * `next(pred)` consumes the first text message matching; pings are answered unless
 * `answerPings: false`.
 */
export async function openRawWebSocket(baseUrl, { headers = {}, query = '', answerPings = true } = {}) {
  const { default: WebSocket } = await import('ws');
  const wsUrl = `${baseUrl.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket${query}`;
  const ws = new WebSocket(wsUrl, { headers });
  const messages = [];
  const waiters = [];
  const closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })));
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? data : data.toString();
    if (answerPings && text === '2') ws.send('3');
    const entry = { text, consumed: false };
    messages.push(entry);
    for (const w of [...waiters]) {
      if (!entry.consumed && typeof text === 'string' && w.pred(text)) {
        entry.consumed = true;
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(text);
      }
    }
  });
  const next = (pred = () => true, ms = WAIT_MS) => {
    const found = messages.find((m) => !m.consumed && typeof m.text === 'string' && pred(m.text));
    if (found) {
      found.consumed = true;
      return Promise.resolve(found.text);
    }
    return withTimeout(new Promise((resolve) => waiters.push({ pred, resolve })), ms, 'a raw websocket message');
  };
  await withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode })));
    }),
    WAIT_MS,
    'websocket open',
  );
  const open = JSON.parse((await next((m) => m.startsWith('0'))).slice(1));
  return { ws, open, messages, next, closed };
}
