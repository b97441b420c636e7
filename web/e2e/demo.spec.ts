// The demo in Debian's Chromium against the real gateway (`serve --dev`, which serves the
// built demo at /): two users chat both ways, typing shows and clears, a notification created
// over the HTTP API appears and is marked read, presence shows both (including who was online
// before the page connected), and after a gateway restart both pages reconnect and show what
// was posted meanwhile exactly once. Takes the README's screenshot (docs/demo.png, see below).

import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { expect, test, type Page } from '@playwright/test';

import { CHROMIUM } from '../playwright.config';
import { removeDb, startGateway, type Gateway } from '../test/gateway';

const here = dirname(fileURLToPath(import.meta.url));
const DIST = resolve(here, '../dist');
// docs/demo.png (the README's) is rewritten when missing or with UPDATE_SCREENSHOT=1, so a test
// run leaves the work tree clean; every run writes test-results/demo.png.
const DOCS_SCREENSHOT = resolve(here, '../../docs/demo.png');
const SCREENSHOT =
  process.env.UPDATE_SCREENSHOT === '1' || !existsSync(DOCS_SCREENSHOT) ? DOCS_SCREENSHOT : resolve(here, '../test-results/demo.png');

if (!existsSync(CHROMIUM)) {
  if (process.env.CI === 'true') throw new Error(`Chromium is required under CI=true (${CHROMIUM}): apt-get install chromium`);
  console.warn(`\n*** SKIPPED: browser tests, no Chromium at ${CHROMIUM} (apt-get install chromium) ***\n`);
}
test.skip(!existsSync(CHROMIUM), 'no Chromium');

let gw: Gateway;
test.beforeAll(async () => {
  if (!existsSync(resolve(DIST, 'index.html'))) throw new Error('the demo is not built: npm run build');
  // No JWT_SECRET: dev mode makes an ephemeral one, so the restart below also invalidates every
  // token and the pages must fetch fresh ones (the one-refresh-then-retry path).
  gw = await startGateway({ args: ['--dev'], env: { WEB_DIR: DIST, JWT_SECRET: undefined as unknown as string, API_KEYS: undefined as unknown as string } });
});
test.afterAll(async () => {
  await gw?.stop();
  if (gw) await removeDb(gw);
});

async function login(page: Page, name: string, room: string) {
  await page.goto(gw.url + '/');
  await page.getByLabel('Name').fill(name);
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page.getByTestId('status')).toHaveText('connected');
  await page.getByLabel('Room').fill(room);
  await page.getByRole('button', { name: 'Join' }).click();
  await expect(page.getByPlaceholder('Type a message...')).toBeVisible();
}

async function say(page: Page, text: string) {
  const input = page.getByPlaceholder('Type a message...');
  await input.fill(text);
  await input.press('Enter');
}

/** How many messages in the page's log have exactly this text. */
const countIn = (page: Page, text: string) => page.getByRole('log').locator('.message .text', { hasText: new RegExp(`^${text}$`) }).count();

test('two users chat, type, get a notification, see presence, and survive a gateway restart', async ({ browser }) => {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  const alice = await ctxA.newPage();
  const bob = await ctxB.newPage();
  const errors: string[] = [];
  for (const p of [alice, bob]) p.on('pageerror', (e) => errors.push(String(e)));

  await login(alice, 'Alice', 'general');
  await login(bob, 'Bob', 'general');
  const bothOnline = async () => {
    for (const p of [alice, bob]) {
      const online = p.getByRole('list', { name: 'Online' });
      await expect(online.getByRole('listitem').filter({ hasText: 'Alice' })).toHaveCount(1);
      await expect(online.getByRole('listitem').filter({ hasText: 'Bob' })).toHaveCount(1);
    }
  };
  // Presence: Alice's page sees Bob through his announcement; Bob's page, opened after Alice
  // was online, needs list_online (PROTOCOL §3) to see her.
  await bothOnline();

  // Chat both ways.
  await say(alice, 'Hello Bob');
  await expect(bob.getByRole('log')).toContainText('Hello Bob');
  await say(bob, 'Hi Alice');
  await expect(alice.getByRole('log')).toContainText('Hi Alice');

  // A notification created over the HTTP API appears, and is marked read.
  const key = (await gw.waitStdout(/H='Authorization: Bearer ([^']+)'/))[1];
  const notify = (userId: string, message: string) =>
    fetch(`${gw.url}/api/v1/notifications`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ userId, tenantId: 'demo', title: 'Deploy', message, type: 'info' }),
    });
  expect((await notify('Bob', 'v2 is live')).status).toBe(201);
  expect((await notify('Alice', 'v2 is live')).status).toBe(201);
  await expect(alice.getByRole('button', { name: /^Notifications/ })).toHaveAccessibleName('Notifications (1 unread)');

  // Typing shows on the other side, and clears after the 2 s pause.
  await bob.getByPlaceholder('Type a message...').pressSequentially('I am wri');
  await expect(alice.locator('.typing')).toContainText('typing');
  await alice.screenshot({ path: SCREENSHOT });
  await expect(alice.locator('.typing')).not.toContainText('typing', { timeout: 8000 });
  await bob.getByPlaceholder('Type a message...').fill('');
  const bell = bob.getByRole('button', { name: /^Notifications/ });
  await expect(bell).toHaveAccessibleName('Notifications (1 unread)');
  await bell.click();
  await expect(bob.getByText('v2 is live')).toBeVisible();
  await bob.getByRole('button', { name: 'Mark read' }).click();
  await expect(bell).toHaveAccessibleName('Notifications (0 unread)');
  await bell.click();

  // Restart the gateway mid-conversation. While it is down both pages say so, and Alice writes
  // a message, which waits in her outbox.
  await gw.stop();
  for (const p of [alice, bob]) await expect(p.getByRole('alert')).toContainText('Disconnected');
  await say(alice, 'Sent while the gateway was down');
  await expect(alice.locator('.message[data-status]')).toContainText('Sent while the gateway was down');
  gw = await gw.restart();
  // A backend posts right away, while the pages are still reconnecting.
  const key2 = (await gw.waitStdout(/H='Authorization: Bearer ([^']+)'/))[1];
  const posted = await fetch(`${gw.url}/api/v1/rooms/general/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key2}`, 'content-type': 'application/json' },
    body: JSON.stringify({ tenantId: 'demo', userId: 'bot', userName: 'Bot', message: 'Posted during the restart' }),
  });
  expect(posted.status).toBe(201);

  for (const p of [alice, bob]) {
    await expect(p.getByTestId('status')).toHaveText('connected', { timeout: 20_000 });
    await expect(p.getByRole('alert')).toHaveCount(0);
    await expect(p.getByRole('log')).toContainText('Posted during the restart');
    await expect(p.getByRole('log')).toContainText('Sent while the gateway was down');
  }
  await expect(alice.locator('.message[data-status]')).toHaveCount(0);
  for (const p of [alice, bob]) {
    for (const text of ['Hello Bob', 'Hi Alice', 'Sent while the gateway was down', 'Posted during the restart']) {
      expect(await countIn(p, text), `${text} once`).toBe(1);
    }
  }
  // And the store has the outbox message once.
  const history = await fetch(`${gw.url}/api/v1/rooms/general/messages?tenantId=demo`, {
    headers: { authorization: `Bearer ${key2}` },
  }).then((r) => r.json());
  const stored = history.messages.map((m: { message: string }) => m.message);
  expect(stored.slice(0, 2)).toEqual(['Hello Bob', 'Hi Alice']);
  expect(stored.slice(2).sort()).toEqual(['Posted during the restart', 'Sent while the gateway was down']);
  expect(errors).toEqual([]);
  await ctxA.close();
  await ctxB.close();
});

test('older history loads when scrolled to the top, and what the user was reading stays in place', async ({ page }) => {
  const key = (await gw.waitStdout(/H='Authorization: Bearer ([^']+)'/))[1];
  for (let i = 1; i <= 80; i++) {
    const r = await fetch(`${gw.url}/api/v1/rooms/archive/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ tenantId: 'demo', userId: 'bot', userName: 'Bot', message: `archived ${i}` }),
    });
    expect(r.status).toBe(201);
  }
  await login(page, 'Carol', 'archive');
  const log = page.getByRole('log');
  const messages = log.locator('.message .text');
  await expect(messages).toHaveCount(50); // the newest page
  await expect(messages.first()).toHaveText('archived 31');
  await expect(messages.last()).toHaveText('archived 80');
  await log.evaluate((el) => (el.scrollTop = 0));
  await expect(messages).toHaveCount(80);
  await expect(messages.first()).toHaveText('archived 1');
  // The message that was at the top before the older page came is still near the top.
  const logBox = (await log.boundingBox())!;
  const anchor = (await log.locator('.message', { has: page.getByText('archived 31', { exact: true }) }).boundingBox())!;
  expect(Math.abs(anchor.y - logBox.y)).toBeLessThan(120);
});
