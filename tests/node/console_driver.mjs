// Drives the debug console page (trigger_api/console/page.html) in headless Chromium for
// tests/e2e/test_console_browser.py: playwright-core with the system `chromium` (nothing is downloaded).
//
// Protocol: one JSON command per line on stdin, one JSON reply per line on stdout:
//   {"id": 1, "op": "open", "page": "a", "url": "http://127.0.0.1:1234/console"}
//   {"type": "result", "id": 1, "ok": true, "result": ...} or {"type": "result", "id": 1, "ok": false, "error": "..."}
// Ops: open, signin, signin_token, wait_status, wait_text, wait_row, rows, wait_roster, send_test, text,
// visible, screenshot, errors, close. Waits take "timeout" in ms. The process exits when stdin closes.
import readline from 'node:readline';
import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || '.';
const DEFAULT_TIMEOUT_MS = 20000;

const pages = new Map(); // name -> {page, errors}
let browser = null;

function reply(message) {
  process.stdout.write(JSON.stringify({ type: 'result', ...message }) + '\n');
}

function get(name) {
  const entry = pages.get(name);
  if (!entry) throw new Error(`no page named ${name}`);
  return entry;
}

const css = (value) => JSON.stringify(String(value)); // a quoted CSS attribute value

function rowSelector({ kind, event, channel }) {
  let sel = '#stream li';
  if (kind) sel += `[data-kind=${css(kind)}]`;
  if (event) sel += `[data-event=${css(event)}]`;
  if (channel) sel += `[data-channel=${css(channel)}]`;
  return sel;
}

const ops = {
  async open({ page: name, url }) {
    const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
    const page = await context.newPage();
    const entry = { page, errors: [] };
    page.on('pageerror', (err) => entry.errors.push(String(err.message ?? err)));
    // A refused request (the wrong-secret page's 401) is logged by Chromium itself; only the page's
    // own errors count.
    page.on('console', (msg) => {
      if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) entry.errors.push(msg.text());
    });
    pages.set(name, entry);
    await page.goto(url);
    await page.locator('#signin-form').waitFor();
    return true;
  },

  async signin({ page: name, key, secret }) {
    const { page } = get(name);
    await page.fill('#key', key);
    await page.fill('#secret', secret);
    await page.click('#open');
    return true;
  },

  async signin_token({ page: name, token, app_id: appId }) {
    const { page } = get(name);
    await page.click('#tab-token');
    await page.fill('#token', token);
    await page.fill('#app-id', appId);
    await page.click('#open');
    return true;
  },

  async wait_status({ page: name, text, timeout }) {
    const { page } = get(name);
    await page.waitForFunction((t) => document.getElementById('status').textContent === t, text,
      { timeout: timeout ?? DEFAULT_TIMEOUT_MS });
    return true;
  },

  async wait_text({ page: name, selector, text, timeout }) {
    const { page } = get(name);
    await page.waitForFunction(([sel, t]) => (document.querySelector(sel)?.textContent ?? '').includes(t),
      [selector, text], { timeout: timeout ?? DEFAULT_TIMEOUT_MS });
    return await page.locator(selector).first().textContent();
  },

  async wait_row({ page: name, timeout, ...filter }) {
    const { page } = get(name);
    const row = page.locator(rowSelector(filter)).first();
    await row.waitFor({ state: 'attached', timeout: timeout ?? DEFAULT_TIMEOUT_MS });
    return await row.textContent();
  },

  async rows({ page: name }) {
    const { page } = get(name);
    return await page.locator('#stream li').evaluateAll((els) => els.map((el) => ({
      kind: el.dataset.kind, event: el.dataset.event ?? null, channel: el.dataset.channel ?? null,
      text: el.textContent,
    })));
  },

  async wait_roster({ page: name, channel, user, present, timeout }) {
    const { page } = get(name);
    const item = page.locator(`#rosters .roster[data-channel=${css(channel)}] li[data-user=${css(user)}]`);
    await item.waitFor({ state: present ? 'attached' : 'detached', timeout: timeout ?? DEFAULT_TIMEOUT_MS });
    return true;
  },

  async send_test({ page: name, channel, event, data, timeout }) {
    const { page } = get(name);
    await page.fill('#send-channel', channel);
    await page.fill('#send-event', event);
    await page.fill('#send-data', data);
    await page.click('#send');
    await page.waitForFunction(() => {
      const t = document.getElementById('send-result').textContent;
      return t && t !== 'sending…';
    }, null, { timeout: timeout ?? DEFAULT_TIMEOUT_MS });
    return await page.locator('#send-result').textContent();
  },

  async text({ page: name, selector }) {
    const { page } = get(name);
    return await page.locator(selector).first().textContent();
  },

  async visible({ page: name, selector }) {
    const { page } = get(name);
    return await page.locator(selector).first().isVisible();
  },

  async screenshot({ page: name, file }) {
    const { page } = get(name);
    await mkdir(SCREENSHOT_DIR, { recursive: true });
    const out = path.join(SCREENSHOT_DIR, file);
    await page.screenshot({ path: out, fullPage: true });
    return out;
  },

  async errors({ page: name }) {
    return get(name).errors;
  },

  async close({ page: name }) {
    const { page } = get(name);
    await page.context().close();
    pages.delete(name);
    return true;
  },
};

async function main() {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  process.stdout.write(JSON.stringify({ type: 'ready' }) + '\n');
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const { id, op, ...args } = JSON.parse(line);
    const handler = ops[op];
    // Commands run concurrently (a wait must not block a screenshot of another page).
    (async () => {
      try {
        if (!handler) throw new Error(`unknown op ${op}`);
        reply({ id, ok: true, result: await handler(args) });
      } catch (error) {
        reply({ id, ok: false, error: String(error.message ?? error) });
      }
    })();
  }
  await browser.close();
}

main().catch((error) => {
  process.stderr.write(`console driver failed: ${error.stack ?? error}\n`);
  process.exit(1);
});
