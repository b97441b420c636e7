import { defineConfig } from '@playwright/test';

// Debian's Chromium (apt-get install chromium): the browser cannot download its own build here.
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export default defineConfig({
  testDir: 'e2e',
  timeout: 90_000,
  expect: { timeout: 10_000 },
  workers: 1,
  reporter: [['list']],
  use: {
    headless: true,
    launchOptions: { executablePath: CHROMIUM, args: ['--no-sandbox'] },
    viewport: { width: 1100, height: 680 },
  },
});
