// Drives Debian's Chromium through a trade confirmation: open its page signed out, sign in,
// come back to it, click Approve. Input (environment): BASE_URL, CONFIRM_PATH, EMAIL, PASSWORD,
// ARTIFACTS, CHROMIUM. Output: one JSON line on stdout with what the browser saw.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env('BASE_URL');
const artifacts = env('ARTIFACTS');
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'crosstrade-chromium-')), {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 390, height: 844 },
});
const page = browser.pages()[0] ?? await browser.newPage();
const result = { consoleErrors: [] };
page.on('console', (message) => { if (message.type() === 'error') result.consoleErrors.push(`${page.url()}: ${message.text()}`); });
page.on('pageerror', (error) => result.consoleErrors.push(`${page.url()}: ${error.message}`));
const overflow = () => page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);

await page.goto(`${base}${env('CONFIRM_PATH')}`);
result.signInUrl = new URL(page.url()).pathname;
await page.getByLabel('Email').fill(env('EMAIL'));
await page.getByLabel('Password').fill(env('PASSWORD'));
await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Sign in' }).click()]);

result.pageUrl = new URL(page.url()).pathname;
result.title = await page.title();
result.before = await page.locator('main').innerText();
result.overflows = await overflow();
await page.screenshot({ path: join(artifacts, 'confirmation-pending.png'), fullPage: true });

await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Approve' }).click()]);
result.afterUrl = new URL(page.url()).pathname;
result.after = await page.locator('main').innerText();
result.buttonsAfter = await page.getByRole('button', { name: 'Approve' }).count();
await page.screenshot({ path: join(artifacts, 'confirmation-approved.png'), fullPage: true });

await browser.close();
process.stdout.write(JSON.stringify(result) + '\n');
