// Starts and stops the real gateway binary for the blueprint's jest spec (in place of the
// NestJS testing module of the original). Not a spec itself: jest only runs *.spec.js.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const JWT_SECRET = 'aegisx-blueprint-spec-secret-0123456789abcdef';
const BIN =
  process.env.AEGISX_BIN || path.resolve(__dirname, '../../../target/debug/aegisx-realtime');
const LISTENING = /^aegisx-realtime listening on 127\.0\.0\.1:(\d+)\s*$/;

/** Spawns `aegisx-realtime serve` on a free port with a fresh database; resolves with
 *  { url, stop() } once it printed its listening line. */
async function startServer(extraEnv = {}, startTimeoutMs = 20000) {
  if (!fs.existsSync(BIN)) {
    throw new Error(`gateway binary not found at ${BIN} (build it, or set AEGISX_BIN)`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aegisx-blueprint-'));
  const child = spawn(BIN, ['serve'], {
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      PORT: '0',
      JWT_SECRET,
      DATABASE_URL: `sqlite://${dir}/t.db`,
      LOG_LEVEL: 'warn',
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  // Never leave the gateway behind if this process ends without calling stop().
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  exited.then(() => process.removeListener('exit', killOnExit));

  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`gateway did not print its listening line within ${startTimeoutMs} ms\n${stderr}`));
    }, startTimeoutMs);
    const lines = readline.createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      const m = LISTENING.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited before listening (code ${code}, signal ${signal})\n${stderr}`));
    });
  });

  return {
    url: `http://127.0.0.1:${port}`,
    secret: JWT_SECRET,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

module.exports = { startServer, JWT_SECRET };
