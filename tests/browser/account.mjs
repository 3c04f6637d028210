// Drives Debian's Chromium through the account pages. Input (environment): BASE_URL, EMAIL,
// PASSWORD, ARTIFACTS, CHROMIUM. Output: one JSON line on stdout with what the browser saw.
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
  // A phone's width: every page must stay usable.
  viewport: { width: 390, height: 844 },
});
const page = browser.pages()[0] ?? await browser.newPage();
const result = { consoleErrors: [] };
page.on('console', (message) => { if (message.type() === 'error') result.consoleErrors.push(`${page.url()}: ${message.text()}`); });
page.on('pageerror', (error) => result.consoleErrors.push(`${page.url()}: ${error.message}`));
// Each page at a phone's width and at a desktop's.
const shot = async (name) => {
  await page.screenshot({ path: join(artifacts, `${name}-phone.png`), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: join(artifacts, `${name}-desktop.png`), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
};
const overflow = () => page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);

await page.goto(`${base}/account/ai-clients`);
result.signInUrl = new URL(page.url()).pathname;
await shot('account-sign-in');
await page.getByLabel('Email').fill(env('EMAIL'));
await page.getByLabel('Password').fill(env('PASSWORD'));
await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Sign in' }).click()]);

result.listUrl = new URL(page.url()).pathname;
result.clientsBefore = await page.locator('.client-name').allInnerTexts();
result.exactTimeOnHover = await page.locator('time').first().getAttribute('title');
result.listOverflows = await overflow();
await shot('ai-clients');

// Keyboard only: tab to the Revoke link and follow it, then confirm with the keyboard too.
const revokeLink = page.getByRole('link', { name: /^Revoke / });
await revokeLink.focus();
await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
result.confirmTitle = await page.title();
await shot('ai-client-revoke');
await page.getByRole('button', { name: 'Revoke' }).focus();
await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
result.clientsAfter = await page.locator('.client-name').allInnerTexts();
result.emptyState = await page.locator('main').innerText();
await shot('ai-clients-empty');

await page.goto(`${base}/account`);
result.overview = await page.locator('main').innerText();
result.overviewOverflows = await overflow();
await shot('account');

await page.goto(`${base}/account/addon-keys`);
await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Create a key' }).click()]);
result.createdKey = await page.getByLabel('Add-On key').inputValue();
result.copyButtonVisible = await page.locator('#copy').isVisible();
await shot('addon-key-created');
await page.goto(`${base}/account/addon-keys`);
result.keysPage = await page.locator('main').innerText();
await shot('addon-keys');

// Sign out on every browser.
await page.goto(`${base}/account`);
await page.getByLabel('Sign out on every browser').check();
await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Sign out' }).click()]);
result.afterSignOut = new URL(page.url()).pathname;
await page.goto(`${base}/account`);
result.accountAfterSignOut = new URL(page.url()).pathname;

await browser.close();
process.stdout.write(JSON.stringify(result) + '\n');
