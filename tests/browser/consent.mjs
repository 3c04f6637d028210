// Drives Debian's Chromium through sign-in and consent, by keyboard alone up to Allow. Input
// (environment):
//   ALLOW_URL, DENY_URL, CSRF_URL  authorization requests (trade) of a registered loopback client
//   READ_URL                       an authorization request for read only
//   EMAIL, PASSWORD                the account to sign in with
//   ARTIFACTS                      folder for screenshots
// Output: one JSON line on stdout with what the browser saw.
import { checkPage, env, open, pressAndWait, tabTo } from './pages.mjs';

const artifacts = env('ARTIFACTS');
const { page, result, close } = await open({ artifacts });

// Follows the consent form's redirect to the client's loopback callback and records where the
// browser landed.
async function decide(button) {
  const [response] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    page.getByRole('button', { name: button }).click(),
  ]);
  return { url: page.url(), status: response?.status() ?? null };
}

// 1. Sign in and Allow with the keyboard only: type into the focused email field, Tab to the
//    password, Enter; on the consent screen Tab to Allow (trade stays preselected), Enter.
await page.goto(env('ALLOW_URL'));
result.signInTitle = await page.title();
await checkPage(page, result, artifacts, 'sign-in');
await page.goto(env('ALLOW_URL'));
result.emailFocusedFirst = await page.evaluate(() => document.activeElement?.id === 'email');
if (!result.emailFocusedFirst) {
  await tabTo(page, result, (f) => f.id === 'email', 'the email field');
}
await page.keyboard.type(env('EMAIL'));
await tabTo(page, result, (f) => f.id === 'password', 'the password field');
await page.keyboard.type(env('PASSWORD'));
await pressAndWait(page, 'Enter');
result.consentTitle = await page.title();
result.readPreselected = await page.locator('input[value="mcp:read"]').isChecked();
result.tradePreselected = await page.locator('input[value="mcp:trade"]').isChecked();
result.consentText = await page.locator('main').innerText();
// What the page says, top to bottom, must read in this order.
result.consentOrder = await page.locator('.facts dt, legend').allInnerTexts();
await checkPage(page, result, artifacts, 'consent-trade');
result.allowFocus = await tabTo(page, result, (f) => f.tag === 'BUTTON' && f.label === 'Allow', 'Allow');
result.allowStyle = await page.evaluate(() => {
  const style = (name) => getComputedStyle(document.querySelector(`button[value="${name}"]`)).backgroundColor;
  return { allow: style('allow'), deny: style('deny') };
});
const callback = new URL(env('ALLOW_URL')).searchParams.get('redirect_uri');
await pressAndWait(page, 'Enter', () => page.waitForURL((landed) => landed.href.startsWith(callback)));
result.allow = { url: page.url() };

// 2. Deny.
await page.goto(env('DENY_URL'));
result.deny = await decide('Deny');

// 3. A request for read only: no trade choice.
await page.goto(env('READ_URL'));
result.readOnlyOffers = await page.locator('input[name="scope"]').evaluateAll((inputs) => inputs.map((i) => i.value));
await checkPage(page, result, artifacts, 'consent-read');

// 4. A tampered CSRF token is refused (the browser logs that 403; nothing else may be logged).
const honest = result.consoleErrors.splice(0);
await page.goto(env('CSRF_URL'));
await page.locator('input[name="csrf"]').evaluate((input) => { input.value = 'forged'; });
result.csrf = await decide('Allow');
result.csrfText = await page.locator('body').innerText();
await checkPage(page, result, artifacts, 'error');

await close();
result.forgeryErrors = result.consoleErrors;
result.consoleErrors = honest;
process.stdout.write(JSON.stringify(result) + '\n');
