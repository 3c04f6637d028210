// Drives Debian's Chromium through sign-in and consent. Input (environment):
//   ALLOW_URL, DENY_URL, CSRF_URL  authorization requests of a registered loopback client
//   EMAIL, PASSWORD                the account to sign in with
//   ARTIFACTS                      folder for screenshots
// Output: one JSON line on stdout with what the browser saw.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
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
// Each page at a phone's width and at a desktop's.
const shoot = async (name) => {
  await page.screenshot({ path: join(artifacts, `${name}-phone.png`), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: join(artifacts, `${name}-desktop.png`), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
};

// Follows the consent form's redirect to the client's loopback callback and records where the
// browser landed.
async function decide(button) {
  const [response] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    page.getByRole('button', { name: button }).click(),
  ]);
  return { url: page.url(), status: response?.status() ?? null };
}

// 1. Sign in, choose trade, Allow.
await page.goto(env('ALLOW_URL'));
result.signInTitle = await page.title();
await shoot('sign-in');
await page.getByLabel('Email').fill(env('EMAIL'));
await page.getByLabel('Password').fill(env('PASSWORD'));
await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Sign in' }).click()]);
result.consentTitle = await page.title();
result.readPreselected = await page.locator('input[value="mcp:read"]').isChecked();
result.tradePreselected = await page.locator('input[value="mcp:trade"]').isChecked();
await shoot('consent');
await page.locator('input[value="mcp:trade"]').check();
result.allow = await decide('Allow');


// 2. Deny.
await page.goto(env('DENY_URL'));
result.deny = await decide('Deny');

// 3. A tampered CSRF token is refused (the browser logs that 403; nothing else may be logged).
const honest = result.consoleErrors.splice(0);
await page.goto(env('CSRF_URL'));
await page.locator('input[name="csrf"]').evaluate((input) => { input.value = 'forged'; });
result.csrf = await decide('Allow');
result.csrfText = await page.locator('body').innerText();
await shoot('csrf-rejected');

await browser.close();
result.forgeryErrors = result.consoleErrors;
result.consoleErrors = honest;
process.stdout.write(JSON.stringify(result) + '\n');
