// Starts the real gateway binary (AEGISX_BIN, default ../target/debug/aegisx-realtime) on a
// free 127.0.0.1 port with a fresh SQLite database, for the vitest and Playwright suites.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import jwt from 'jsonwebtoken';

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.AEGISX_BIN ?? resolve(here, '../../target/debug/aegisx-realtime');
export const SECRET = 'aegisx-web-test-secret-0123456789abcdefghij';
export const API_KEY = 'web-test-key';

export interface Gateway {
  url: string;
  port: number;
  dbDir: string;
  child: ChildProcess;
  stdout: () => string;
  /** Resolves with the first match of `re` in stdout, waiting for it to be printed. */
  waitStdout(re: RegExp): Promise<RegExpMatchArray>;
  /** SIGTERM, wait for the exit. */
  stop(): Promise<void>;
  /** Stops and starts again on the same port and database. */
  restart(): Promise<Gateway>;
  token(claims: Record<string, unknown>, ttlSecs?: number): string;
  api(path: string, init?: { method?: string; body?: unknown }): Promise<any>;
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = net.createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => res(port));
    });
  });
}

interface StartOptions {
  env?: Record<string, string>;
  args?: string[];
  port?: number;
  dbDir?: string;
}

export async function startGateway(opts: StartOptions = {}): Promise<Gateway> {
  if (!existsSync(BIN)) throw new Error(`gateway binary not found at ${BIN}: cargo build --bins, or set AEGISX_BIN`);
  const dbDir = opts.dbDir ?? (await mkdtemp(join(tmpdir(), 'aegisx-web-')));
  const port = opts.port ?? 0;
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOST: '127.0.0.1',
    PORT: String(port),
    JWT_SECRET: SECRET,
    DATABASE_URL: `sqlite://${dbDir}/t.db`,
    API_KEYS: API_KEY,
    LOG_LEVEL: 'warn',
    RATE_LIMIT_PER_MINUTE: '100000',
    ...opts.env,
  };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const child = spawn(BIN, ['serve', ...(opts.args ?? [])], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const boundPort = await new Promise<number>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`gateway did not start\n${out}\n${err}`)), 30_000);
    child.stdout!.on('data', (d) => {
      out += d;
      const m = out.match(/aegisx-realtime listening on [\d.]+:(\d+)/);
      if (m) {
        clearTimeout(timer);
        res(Number(m[1]));
      }
    });
    child.stderr!.on('data', (d) => {
      err += d;
      if (err.length > 100_000) err = err.slice(-50_000);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`gateway exited (${code})\n${out}\n${err}`));
    });
  });
  const url = `http://127.0.0.1:${boundPort}`;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const gw: Gateway = {
    url,
    port: boundPort,
    dbDir,
    child,
    stdout: () => out,
    waitStdout(re) {
      return new Promise((res, rej) => {
        const check = () => {
          const m = out.match(re);
          if (!m) return false;
          child.stdout!.off('data', onData);
          clearTimeout(timer);
          res(m);
          return true;
        };
        const onData = () => queueMicrotask(check);
        const timer = setTimeout(() => rej(new Error(`stdout never matched ${re}`)), 10_000);
        child.stdout!.on('data', onData);
        check();
      });
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
    },
    async restart() {
      await gw.stop();
      return startGateway({ ...opts, port: boundPort, dbDir });
    },
    token(claims, ttlSecs = 3600) {
      return jwt.sign({ exp: Math.floor(Date.now() / 1000) + ttlSecs, ...claims }, SECRET, { algorithm: 'HS256', noTimestamp: true });
    },
    async api(path, init = {}) {
      const res = await fetch(`${url}/api/v1${path}`, {
        method: init.method ?? (init.body ? 'POST' : 'GET'),
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`${path}: ${res.status} ${text}`);
      return text ? JSON.parse(text) : null;
    },
  };
  return gw;
}

export async function removeDb(gw: Gateway) {
  await rm(gw.dbDir, { recursive: true, force: true });
}
