// Multi-node harness for the cluster suites: a redis-server (or a 3-master Redis Cluster) on
// free ports, a fresh PostgreSQL database per test file, N gateway processes sharing them, and
// nginx in front, configured from the shipped deploy/nginx/aegisx-realtime.conf. Everything runs
// as a child process of the test on loopback; the machine's own Redis on 6379 is never touched.
//
// Under CI=true a missing redis-server, redis-cli, nginx or PostgreSQL fails the suite; elsewhere
// the suite is skipped with a loud line on stderr.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

import { request, signToken, socketClients, startServer, uid } from './helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const DEPLOY_NGINX = resolve(here, '../../../deploy/nginx/aegisx-realtime.conf');
export const PG_URL = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const API_KEY = 'cluster-api-key-0123456789';
export const CI = process.env.CI === 'true';

/** Where a tool lives: PATH, then the sbin directories (nginx is in /usr/sbin). */
export function findTool(name) {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    if (d && existsSync(join(d, name))) return join(d, name);
  }
  return null;
}

function postgresAnswers() {
  try {
    execFileSync('psql', [PG_URL, '-qtAc', 'SELECT 1'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 });
    return null;
  } catch (e) {
    return String(e.stderr ?? e.message).trim() || 'psql failed';
  }
}

/**
 * What this suite needs (`redis-server`, `redis-cli`, `nginx`, `postgres`). Returns a skip
 * reason, or false when everything is there; under CI=true a missing piece throws instead.
 */
export function requirements(file, needs = ['redis-server', 'redis-cli', 'postgres']) {
  const missing = [];
  for (const n of needs) {
    if (n === 'postgres') {
      const why = postgresAnswers();
      if (why) missing.push(`PostgreSQL at ${PG_URL} (${why})`);
    } else if (!findTool(n)) {
      missing.push(n);
    }
  }
  if (missing.length === 0) return false;
  const reason = `${file} needs ${missing.join(', ')}`;
  if (CI) throw new Error(`required under CI=true: ${reason}`);
  console.error(`\n*** SKIPPED: ${reason} ***\n`);
  return reason;
}

/** A TCP port nobody listens on now (and, with `plus`, port + plus free too). */
export async function freePort({ plus } = {}) {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const p = s.address().port;
        s.close(() => resolve(p));
      });
    });
    if (plus === undefined) return port;
    // Redis Cluster also listens on port + 10000 (its bus), which must exist and be free.
    if (port + plus > 65535) continue;
    const ok = await new Promise((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port + plus, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free port pair found');
}

/** Resolves when `check()` is truthy (polled), rejects after `ms` naming `what`. */
export async function until(check, what, ms = 10000, every = 50) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

/** Runs redis-cli against `port` and returns its stdout (trimmed). */
export function redisCli(port, ...args) {
  return execFileSync(findTool('redis-cli'), ['-h', '127.0.0.1', '-p', String(port), ...args], {
    encoding: 'utf8',
    timeout: 10000,
    stdio: ['ignore', 'pipe', 'pipe'],
  }).trim();
}

function redisPing(port) {
  try {
    return redisCli(port, 'PING') === 'PONG';
  } catch {
    return false;
  }
}

/**
 * One redis-server process on `port`, with nothing on disk. `start()` again after `stop()`
 * brings it back on the same port (fault tests), empty.
 */
function redisProcess(port, dir, extraArgs = []) {
  let child = null;
  let log = '';
  const proc = {
    port,
    get running() {
      return child !== null;
    },
    log: () => log,
    async start() {
      assert.equal(child, null, 'redis-server already running');
      const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extraArgs];
      child = spawn(findTool('redis-server'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
      const c = child;
      c.stdout.on('data', (d) => {
        log = (log + d).slice(-20000);
      });
      c.stderr.on('data', (d) => {
        log = (log + d).slice(-20000);
      });
      c.once('exit', () => {
        if (child === c) child = null;
      });
      await until(() => {
        if (c.exitCode !== null) throw new Error(`redis-server on ${port} exited: ${log}`);
        return redisPing(port);
      }, `redis-server on port ${port}`);
    },
    /** Stops it at once (SIGKILL: nothing is saved anyway) and waits for the exit. */
    async stop() {
      const c = child;
      if (!c) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await exited;
      child = null;
    },
  };
  return proc;
}

/** A single redis-server on a free port: `{ url, port, cli(...), stop(), start(), close() }`. */
export async function startRedis() {
  const dir = await mkdtemp(join(tmpdir(), 'aegisx-redis-'));
  const port = await freePort();
  const proc = redisProcess(port, dir);
  await proc.start();
  return {
    kind: 'redis',
    port,
    url: `redis://127.0.0.1:${port}`,
    cli: (...args) => redisCli(port, ...args),
    /** Every redis-server of this deployment (one). */
    ports: [port],
    get running() {
      return proc.running;
    },
    stop: () => proc.stop(),
    start: () => proc.start(),
    async close() {
      await proc.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A Redis Cluster of `masters` masters (no replicas) on free ports, created with `redis-cli
 * --cluster create` and awaited until every node says `cluster_state:ok`. The URL lists every
 * node, in the `redis-cluster://host:port?node=host:port` form the gateway reads.
 */
export async function startRedisCluster(masters = 3) {
  const dir = await mkdtemp(join(tmpdir(), 'aegisx-redis-cluster-'));
  const procs = [];
  for (let i = 0; i < masters; i++) {
    const port = await freePort({ plus: 10000 });
    const args = ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '2000'];
    const p = redisProcess(port, dir, args);
    await p.start();
    procs.push(p);
  }
  const ports = procs.map((p) => p.port);
  execFileSync(
    findTool('redis-cli'),
    ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'],
    { encoding: 'utf8', timeout: 30000, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  await until(
    () => ports.every((p) => /cluster_state:ok/.test(redisCli(p, 'CLUSTER', 'INFO')) && /cluster_known_nodes:(\d+)/.exec(redisCli(p, 'CLUSTER', 'INFO'))?.[1] === String(masters)),
    'the Redis Cluster to be ok on every node',
    20000,
    100,
  );
  const [first, ...rest] = ports;
  return {
    kind: 'cluster',
    port: first,
    ports,
    url: `redis-cluster://127.0.0.1:${first}?${rest.map((p) => `node=127.0.0.1:${p}`).join('&')}`,
    /** redis-cli in cluster mode (-c follows MOVED), entered at the first node. */
    cli: (...args) => redisCli(first, '-c', ...args),
    async close() {
      for (const p of procs) await p.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function psql(sql, url = PG_URL) {
  return execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qtAc', sql], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 20000,
  }).trim();
}

/**
 * A fresh PostgreSQL database for one test file (the gateways create the schema on start).
 * Databases of this harness older than an hour (a run that crashed) are dropped first.
 */
export async function freshDatabase(tag = 'cluster') {
  const now = Math.floor(Date.now() / 1000);
  const names = psql("SELECT datname FROM pg_database WHERE datname LIKE 'aegisx\\_cl\\_%'").split('\n').filter(Boolean);
  for (const n of names) {
    const created = Number(n.split('_')[2]);
    if (Number.isFinite(created) && created + 3600 < now) {
      try {
        psql(`DROP DATABASE IF EXISTS ${n} WITH (FORCE)`);
      } catch {
        // another run may be dropping it at the same time
      }
    }
  }
  const name = `aegisx_cl_${now}_${tag.replace(/[^a-z0-9]/gi, '').toLowerCase()}_${process.pid}`;
  psql(`CREATE DATABASE ${name}`);
  const url = new URL(PG_URL);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    async drop() {
      try {
        psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } catch {
        // its name carries its creation time: a later run drops it
      }
    },
  };
}

/**
 * Clients of a Socket.IO endpoint (`url`: a node or the load balancer), with the same
 * `client`/`connect`/`refused` API as startServer's. `opts.from` connects from that loopback
 * address (127.0.0.0/8 is all local on Linux), so a sticky-by-address balancer sees distinct
 * clients.
 */
export function endpoint(url) {
  const ep = {
    url,
    ...socketClients(url),
    /** An API call with the cluster's key. */
    api(path, { method = 'GET', body, headers = {} } = {}) {
      return request(`${url}/api/v1${path}`, { method, body, headers: { authorization: `Bearer ${API_KEY}`, ...headers } });
    },
  };
  return ep;
}

/**
 * The shipped nginx config with this deployment's nodes and port: the upstream's `server`
 * lines are replaced (keeping the template's parameters) and `listen 80;` becomes the test's
 * port. Fails when the template no longer has the shape this relies on.
 */
export function nginxConfigFor(template, { listen, upstreams }) {
  const block = /upstream aegisx_realtime \{[\s\S]*?\n\}/.exec(template);
  assert.ok(block, 'deploy nginx config: no `upstream aegisx_realtime { … }` block');
  const serverLine = /^([ \t]*)server[ \t]+[^\s;]+([ \t][^;\n]*)?;[^\n]*$/gm;
  const lines = [...block[0].matchAll(serverLine)];
  assert.ok(lines.length > 0, 'deploy nginx config: the upstream has no `server` line');
  const [, indent, params = ''] = lines[0];
  const generated = upstreams.map((u) => `${indent}server ${u}${params};`).join('\n');
  let first = true;
  const newBlock = block[0].replace(serverLine, () => {
    if (!first) return '\u0000';
    first = false;
    return generated;
  }).replace(/\n\u0000/g, '');
  let out = template.replace(block[0], newBlock);
  assert.equal((out.match(/^[ \t]*listen 80;[ \t]*$/gm) ?? []).length, 1, 'deploy nginx config: expected one `listen 80;`');
  out = out.replace(/^([ \t]*)listen 80;[ \t]*$/m, `$1listen 127.0.0.1:${listen};`);
  return out;
}

/**
 * nginx in the foreground as a child process, with the shipped site config (see
 * nginxConfigFor) inside a minimal main config whose pid, logs and temp paths are in a temp
 * directory. `upstreams` are `host:port` of the nodes.
 */
export async function startNginx(upstreams) {
  const dir = await mkdtemp(join(tmpdir(), 'aegisx-nginx-'));
  // As root, nginx's workers run as nobody: they must be able to enter the directory.
  await chmod(dir, 0o755);
  const port = await freePort();
  const site = nginxConfigFor(await readFile(DEPLOY_NGINX, 'utf8'), { listen: port, upstreams });
  await writeFile(join(dir, 'aegisx-realtime.conf'), site);
  const main = [
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log warn;`,
    'events { worker_connections 4096; }',
    'http {',
    `  access_log ${dir}/access.log;`,
    `  client_body_temp_path ${dir}/client_body;`,
    `  proxy_temp_path ${dir}/proxy;`,
    `  fastcgi_temp_path ${dir}/fastcgi;`,
    `  uwsgi_temp_path ${dir}/uwsgi;`,
    `  scgi_temp_path ${dir}/scgi;`,
    `  include ${dir}/aegisx-realtime.conf;`,
    '}',
    '',
  ].join('\n');
  await writeFile(join(dir, 'nginx.conf'), main);
  const bin = findTool('nginx');
  // -t first: a config error is reported as such, not as a timeout.
  execFileSync(bin, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-t', '-q'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10000 });
  const child = spawn(bin, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => {
    log = (log + d).slice(-20000);
  });
  const exited = new Promise((r) => child.once('exit', r));
  const url = `http://127.0.0.1:${port}`;
  await until(async () => {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${log}`);
    const r = await request(`${url}/healthz`);
    return r.status === 200;
  }, `nginx on port ${port} to proxy /healthz`);
  return {
    url,
    port,
    dir,
    log: async () => `${log}${await readFile(join(dir, 'error.log'), 'utf8').catch(() => '')}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export const DEPLOY_HAPROXY = resolve(here, '../../../deploy/haproxy/aegisx-realtime.cfg');

/**
 * The shipped HAProxy config with this deployment's nodes and port: the backend's `server`
 * lines are replaced (keeping the template's parameters) and `bind :80` becomes the test's port.
 */
export function haproxyConfigFor(template, { listen, upstreams }) {
  const serverLine = /^([ \t]*)server[ \t]+\S+[ \t]+[^\s]+:\d+([^\n]*)$/gm;
  const lines = [...template.matchAll(serverLine)];
  assert.ok(lines.length > 0, 'deploy haproxy config: no `server name host:port …` line');
  const [, indent, params] = lines[0];
  let first = true;
  let out = template.replace(serverLine, () => {
    if (!first) return '\u0000';
    first = false;
    return upstreams.map((u, i) => `${indent}server node-${i + 1} ${u}${params}`).join('\n');
  }).replace(/\n\u0000/g, '');
  assert.equal((out.match(/^[ \t]*bind :80[ \t]*$/gm) ?? []).length, 1, 'deploy haproxy config: expected one `bind :80`');
  out = out.replace(/^([ \t]*)bind :80[ \t]*$/m, `$1bind 127.0.0.1:${listen}`);
  return out;
}

/** HAProxy in the foreground (-db) with the shipped config (see haproxyConfigFor). */
export async function startHaproxy(upstreams) {
  const dir = await mkdtemp(join(tmpdir(), 'aegisx-haproxy-'));
  const port = await freePort();
  const cfg = join(dir, 'aegisx-realtime.cfg');
  await writeFile(cfg, haproxyConfigFor(await readFile(DEPLOY_HAPROXY, 'utf8'), { listen: port, upstreams }));
  const bin = findTool('haproxy');
  execFileSync(bin, ['-c', '-q', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10000 });
  const child = spawn(bin, ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  for (const st of [child.stdout, child.stderr]) st.on('data', (d) => {
    log = (log + d).slice(-20000);
  });
  const exited = new Promise((r) => child.once('exit', r));
  const url = `http://127.0.0.1:${port}`;
  await until(async () => {
    if (child.exitCode !== null) throw new Error(`haproxy exited: ${log}`);
    return (await request(`${url}/healthz`)).status === 200;
  }, `haproxy on port ${port} to proxy /healthz`);
  return {
    url,
    port,
    log: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A cluster for one test file: `nodes` gateways (NODE_ID node-1…) on one Redis deployment
 * (`redis`: 'single' or 'cluster') and one fresh PostgreSQL database, with nginx in front when
 * `lb` is true. `env` adds settings to every node. Returns
 * `{ redis, db, nodes: [server + endpoint], lb?: endpoint, token(), stop() }`.
 */
export async function startCluster({ nodes = 2, redis = 'single', lb = false, env = {}, tag = 'cluster' } = {}) {
  const r = redis === 'cluster' ? await startRedisCluster(3) : await startRedis();
  const db = await freshDatabase(tag);
  const common = {
    DATABASE_URL: db.url,
    REDIS_URL: r.url,
    API_KEYS: API_KEY,
    // Through nginx every client is the proxy's 127.0.0.1: believe its X-Forwarded-For.
    TRUSTED_PROXIES: '127.0.0.1/32',
    ...env,
  };
  const started = [];
  // One after the other: the first node runs the migrations on the empty database.
  for (let i = 1; i <= nodes; i++) started.push(await startNode(common, i));
  const cluster = {
    redis: r,
    db,
    nodes: started,
    common,
    lb: null,
    nginx: null,
    token: (claims = {}, opts = {}) => signToken({ sub: uid('user'), ...claims }, opts),
    /** Starts node `i` (1-based) again after it stopped, with the same settings. */
    async restartNode(i) {
      const node = await startNode(common, i);
      cluster.nodes[i - 1] = node;
      return node;
    },
    closeClients() {
      for (const n of cluster.nodes) n.closeClients();
      cluster.lb?.closeClients();
    },
    async stop() {
      cluster.closeClients();
      await cluster.nginx?.stop();
      for (const n of cluster.nodes) await n.stop();
      await r.close();
      await db.drop();
    },
  };
  if (lb) {
    cluster.nginx = await startNginx(started.map((n) => `127.0.0.1:${n.port}`));
    cluster.lb = endpoint(cluster.nginx.url);
  }
  return cluster;
}

async function startNode(common, i) {
  const server = await startServer({ ...common, NODE_ID: `node-${i}` });
  const ep = endpoint(server.url);
  const node = Object.assign(server, {
    id: `node-${i}`,
    api: ep.api,
    /** SIGKILL: the node dies without cleaning anything up. */
    async kill() {
      server.closeClients();
      if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
      await server.exited;
    },
  });
  return node;
}

/** The value of a metric sample (`name{labels}`, labels optional) on `/metrics`, or 0. */
export async function metric(url, name, labels = {}) {
  const res = await request(`${url}/metrics`);
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum = 0;
  let seen = false;
  for (const line of res.body.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    if (want.every((w) => (m[3] ?? '').split(',').includes(w))) {
      sum += Number(m[4]);
      seen = true;
    }
  }
  return seen ? sum : 0;
}
