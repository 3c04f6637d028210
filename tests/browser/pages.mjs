// What every page of the site gets checked for, shared by the page scripts: screenshots at a
// phone's width (390 px) and a desktop's (1280 px) in the light and the dark theme, no
// horizontal overflow, no WCAG 2.1 A/AA violation found by axe-core, and a visible focus ring
// on everything the keyboard reaches.
//
// axe-core runs inside the page without relaxing its CSP: its source is evaluated through the
// DevTools protocol (Playwright's `page.evaluate` of a string), which the page's CSP does not
// govern, unlike a `<script>` tag that `page.addScriptTag` would insert.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const WCAG_21_AA = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];

export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 800 };
const WIDTHS = [['phone', PHONE], ['desktop', DESKTOP]];
const THEMES = ['light', 'dark'];

export const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

// Debian's Chromium in a fresh profile, at a phone's width. `result` collects what every page
// showed: console errors, overflows, accessibility violations, focus rings missing.
export async function open({ artifacts, viewport = PHONE }) {
  mkdirSync(artifacts, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'crosstrade-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport,
  });
  const page = context.pages()[0] ?? await context.newPage();
  const result = { consoleErrors: [], overflows: [], violations: [], missingFocusRings: [], checkedPages: [] };
  page.on('console', (message) => { if (message.type() === 'error') result.consoleErrors.push(`${page.url()}: ${message.text()}`); });
  page.on('pageerror', (error) => result.consoleErrors.push(`${page.url()}: ${error.message}`));
  // Closes the browser, then removes its profile (Chromium writes to it until it has exited).
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, result, close };
}

// The axe-core violations of the page as it is now: one line each with the rule, its impact,
// its help text and the elements.
export async function audit(page) {
  if (!await page.evaluate(() => typeof window.axe === 'object')) {
    await page.evaluate(AXE_SOURCE);
  }
  const violations = await page.evaluate(async (tags) => {
    const results = await window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
    return results.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary ?? ''}`.trim()),
    }));
  }, WCAG_21_AA);
  return violations;
}

// Screenshots `name` at both widths in both themes into `artifacts`
// (`{name}-{phone|desktop}-{light|dark}.png`), and records overflows and axe violations in
// each. Leaves the page light, at a phone's width.
export async function checkPage(page, result, artifacts, name) {
  result.checkedPages.push(name);
  for (const theme of THEMES) {
    await page.emulateMedia({ colorScheme: theme });
    for (const [width, size] of WIDTHS) {
      await page.setViewportSize(size);
      const where = `${name} (${width}, ${theme})`;
      const overflows = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
      if (overflows) result.overflows.push(where);
      await page.screenshot({ path: join(artifacts, `${name}-${width}-${theme}.png`), fullPage: true });
      for (const violation of await audit(page)) {
        result.violations.push({ page: where, ...violation });
      }
    }
  }
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize(PHONE);
}

// What has the keyboard focus: its tag, accessible label and whether a focus ring shows.
async function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return { tag: 'BODY', label: '', ring: true };
    const style = getComputedStyle(el);
    const ring = (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2)
      || (style.boxShadow !== 'none' && style.boxShadow !== '');
    const label = (el.getAttribute('aria-label') || el.innerText || el.value || '').trim();
    return { tag: el.tagName, id: el.id, type: el.getAttribute('type'), value: el.value, label, ring };
  });
}

// Presses Tab until `wanted(focus)` holds for the focused element; every element passed on the
// way must show a focus ring. Returns the element's description.
export async function tabTo(page, result, wanted, what, limit = 40) {
  for (let i = 0; i < limit; i++) {
    await page.keyboard.press('Tab');
    const focus = await focused(page);
    if (focus.tag !== 'BODY' && !focus.ring) result.missingFocusRings.push(`${new URL(page.url()).pathname}: ${focus.tag} ${focus.label}`);
    if (wanted(focus)) return focus;
  }
  throw new Error(`${what} was not reached with Tab on ${page.url()}`);
}

// Presses `key` on the focused element and waits for the navigation it starts.
export async function pressAndWait(page, key, waitFor = () => page.waitForNavigation()) {
  await Promise.all([waitFor(), page.keyboard.press(key)]);
}

export const overflow = (page) => page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
