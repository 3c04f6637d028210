// The person at the browser, for an MCP client's authorization requests: opens the URL the
// client hands over in Debian's Chromium, signs in when the server asks, and on the consent
// screen either just clicks Allow (keeping the permission the page preselected) or first picks
// one. One browser profile for the whole run, so a second request finds the session cookie.
//
// As a module: `openPerson(options)` → `{ authorize(url, { choose, callback }), close() }`.
// As a program (for clients written in other languages): options from the environment (EMAIL,
// PASSWORD, CHROMIUM, ARTIFACTS); one JSON request per stdin line,
// `{"url": …, "choose": "mcp:read" | null, "callback": "http://127.0.0.1:…/callback"}`,
// answered by one JSON line on stdout with what the person saw (or `{"error": …}`).
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

export async function openPerson({ email, password, executablePath, artifacts, label }) {
  mkdirSync(artifacts, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'crosstrade-person-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 800 },
  });
  const page = context.pages()[0] ?? await context.newPage();
  let consents = 0;

  // `choose`: null to just click Allow, or the scope radio to pick first.
  // `callback`: the client's redirect URI; the browser's journey ends when it lands there.
  async function authorize(url, { choose, callback }) {
    await page.goto(url);
    let signedIn = false;
    if (await page.locator('input[name="password"]').count() > 0) {
      await page.getByLabel('Email').fill(email);
      await page.getByLabel('Password').fill(password);
      await Promise.all([
        page.waitForNavigation(),
        page.getByRole('button', { name: 'Sign in' }).click(),
      ]);
      signedIn = true;
    }
    consents += 1;
    const title = await page.title();
    const offered = await page.locator('input[name="scope"]').evaluateAll(
      (inputs) => inputs.map((input) => input.value));
    const preselected = await page.locator('input[name="scope"]:checked').evaluateAll(
      (inputs) => inputs.map((input) => input.value)[0] ?? null);
    await page.screenshot({ path: join(artifacts, `${label}-consent-${consents}.png`), fullPage: true });
    if (choose) {
      await page.locator(`input[name="scope"][value="${choose}"]`).check();
    }
    await Promise.all([
      page.waitForURL((landed) => landed.href.startsWith(callback)),
      page.getByRole('button', { name: 'Allow' }).click(),
    ]);
    const landed = new URL(page.url());
    return { consent: consents, signedIn, title, offered, preselected, chose: choose ?? null, landed: landed.origin + landed.pathname };
  }

  async function close() {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }

  return { authorize, close };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const env = (name) => {
    const value = process.env[name];
    if (!value) throw new Error(`${name} is not set`);
    return value;
  };
  const person = await openPerson({
    email: env('EMAIL'),
    password: env('PASSWORD'),
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    artifacts: env('ARTIFACTS'),
    label: process.env.LABEL ?? 'person',
  });
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    try {
      const request = JSON.parse(line);
      const seen = await person.authorize(request.url, request);
      process.stdout.write(JSON.stringify(seen) + '\n');
    } catch (error) {
      process.stdout.write(JSON.stringify({ error: String(error?.message ?? error) }) + '\n');
    }
  }
  await person.close();
}
