// Drives Debian's Chromium through the account pages. Input (environment): BASE_URL, EMAIL,
// PASSWORD, ARTIFACTS, CHROMIUM. Output: one JSON line on stdout with what the browser saw.
import { checkPage, env, open, overflow, pressAndWait, tabTo } from './pages.mjs';

const base = env('BASE_URL');
const artifacts = env('ARTIFACTS');
const { page, result, close } = await open({ artifacts });

await page.goto(`${base}/account/ai-clients`);
result.signInUrl = new URL(page.url()).pathname;
await checkPage(page, result, artifacts, 'account-sign-in');
await page.getByLabel('Email').fill(env('EMAIL'));
await page.getByLabel('Password').fill(env('PASSWORD'));
await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Sign in' }).click()]);

// What each client did.
result.listUrl = new URL(page.url()).pathname;
result.clientsBefore = await page.locator('.client-name').allInnerTexts();
result.exactTimeOnHover = await page.locator('time').first().getAttribute('title');
result.listOverflows = await overflow(page);
result.charts = await page.locator('svg.chart[role="img"]').evaluateAll((charts) => charts.map((c) => c.getAttribute('aria-label')));
result.chartBars = await page.locator('svg.chart').evaluateAll((charts) => charts.map((c) => c.querySelectorAll('text.count').length));
result.tools = await page.locator('.client').evaluateAll((cards) => cards.map((card) => ({
  client: card.querySelector('.client-name').innerText,
  rows: [...card.querySelectorAll('table.tools tbody tr')].map((row) => row.innerText.replace(/\s+/g, ' ').trim()),
  calls: [...card.querySelectorAll('.calls li')].map((item) => item.innerText.replace(/\s+/g, ' ').trim()),
})));
// The chart's colours come from the stylesheet, so the dark theme changes them.
const barColour = () => page.locator('svg.chart rect.bar').first().evaluate((bar) => getComputedStyle(bar).fill);
result.barLight = await barColour();
await page.emulateMedia({ colorScheme: 'dark' });
result.barDark = await barColour();
await page.emulateMedia({ colorScheme: 'light' });
await checkPage(page, result, artifacts, 'ai-clients');

// Keyboard only: Tab to one client's Revoke link and follow it, confirm with the keyboard too.
await tabTo(page, result, (f) => f.tag === 'A' && f.label === 'Revoke Test Client', 'Revoke Test Client');
await pressAndWait(page, 'Enter');
result.confirmTitle = await page.title();
await checkPage(page, result, artifacts, 'ai-client-revoke');
await tabTo(page, result, (f) => f.tag === 'BUTTON' && f.label === 'Revoke', 'the Revoke button');
await pressAndWait(page, 'Enter');
result.clientsAfterOne = await page.locator('.client-name').allInnerTexts();

// Then every other one: Revoke all, confirmed with the space bar.
await tabTo(page, result, (f) => f.tag === 'A' && f.label === 'Revoke all AI clients', 'Revoke all AI clients');
await pressAndWait(page, 'Enter');
result.revokeAllTitle = await page.title();
await checkPage(page, result, artifacts, 'ai-clients-revoke-all');
await tabTo(page, result, (f) => f.tag === 'BUTTON' && f.label === 'Revoke all', 'the Revoke all button');
await pressAndWait(page, 'Space');
result.clientsAfter = await page.locator('.client-name').allInnerTexts();
result.emptyState = await page.locator('main').innerText();
await checkPage(page, result, artifacts, 'ai-clients-empty');

await page.goto(`${base}/account`);
result.overview = await page.locator('main').innerText();
result.overviewOverflows = await overflow(page);
await checkPage(page, result, artifacts, 'account');

await page.goto(`${base}/account/addon-keys`);
await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Create a key' }).click()]);
result.createdKey = await page.getByLabel('Add-On key').inputValue();
result.copyButtonVisible = await page.locator('#copy').isVisible();
await checkPage(page, result, artifacts, 'addon-key-created');
await page.goto(`${base}/account/addon-keys`);
result.keysPage = await page.locator('main').innerText();
await checkPage(page, result, artifacts, 'addon-keys');

// Sign out on every browser.
await page.goto(`${base}/account`);
await page.getByLabel('Sign out on every browser').check();
await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Sign out' }).click()]);
result.afterSignOut = new URL(page.url()).pathname;
await page.goto(`${base}/account`);
result.accountAfterSignOut = new URL(page.url()).pathname;

await close();
process.stdout.write(JSON.stringify(result) + '\n');
