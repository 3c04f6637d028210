// Drives Debian's Chromium through a trade confirmation: open its page signed out, sign in,
// come back to it, click Approve. Input (environment): BASE_URL, CONFIRM_PATH, EMAIL, PASSWORD,
// ARTIFACTS, CHROMIUM. Output: one JSON line on stdout with what the browser saw.
import { checkPage, env, open, overflow } from './pages.mjs';

const base = env('BASE_URL');
const artifacts = env('ARTIFACTS');
const { page, result, close } = await open({ artifacts });

await page.goto(`${base}${env('CONFIRM_PATH')}`);
result.signInUrl = new URL(page.url()).pathname;
await page.getByLabel('Email').fill(env('EMAIL'));
await page.getByLabel('Password').fill(env('PASSWORD'));
await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Sign in' }).click()]);

result.pageUrl = new URL(page.url()).pathname;
result.title = await page.title();
result.before = await page.locator('main').innerText();
result.phoneOverflows = await overflow(page);
await checkPage(page, result, artifacts, 'confirmation-pending');

await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Approve' }).click()]);
result.afterUrl = new URL(page.url()).pathname;
result.after = await page.locator('main').innerText();
result.buttonsAfter = await page.getByRole('button', { name: 'Approve' }).count();
await checkPage(page, result, artifacts, 'confirmation-approved');

await page.goto(`${base}/account/confirmations`);
result.list = await page.locator('main').innerText();
await checkPage(page, result, artifacts, 'confirmations');

await close();
process.stdout.write(JSON.stringify(result) + '\n');
