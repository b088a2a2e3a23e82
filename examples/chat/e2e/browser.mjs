// The chat demo end to end in headless Chromium: two users in two browser contexts, each connected
// to a different Herald gateway of one cluster. Driven by tests/e2e/test_chat_browser.py, which
// starts Redis, the gateways, the trigger API and the chat backend, and passes their ports:
//
//   CHAT_URL        the chat backend (serves the built page)
//   GATEWAY_A       gateway port Alice's page gets (the backend's node 0)
//   GATEWAY_B       gateway port behind Bob's proxy
//   PROXY_PORT      where this script listens, forwarding to GATEWAY_B (the backend's node 1): a
//                   stand-in for a load balancer that lets the test cut Bob's connection
//   SCREENSHOT_DIR  where each step's screenshot goes
//   CHROMIUM        the browser binary (default /usr/bin/chromium); no browser is ever downloaded
//
// Prints one JSON line per step and exits 1 with the reason (and failure screenshots) if a check fails.
import { chromium } from 'playwright-core';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

function setting(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
}

const CHAT_URL = setting('CHAT_URL');
const GATEWAY_A = Number(setting('GATEWAY_A'));
const GATEWAY_B = Number(setting('GATEWAY_B'));
const PROXY_PORT = Number(setting('PROXY_PORT'));
const SCREENSHOT_DIR = setting('SCREENSHOT_DIR');
const CHROMIUM = setting('CHROMIUM', '/usr/bin/chromium');
const TIMEOUT = 10_000;

const report = (step, extra = {}) => console.log(JSON.stringify({ step, ...extra }));

/** Forwards to a gateway; `cut()` drops the open connections and holds new ones until `resume()`. */
class HoldingProxy {
  constructor(port, target) {
    this.port = port;
    this.target = target;
    this.pairs = new Set();
    this.held = [];
    this.holding = false;
    this.accepted = 0;
  }

  start() {
    this.server = net.createServer((client) => {
      this.accepted += 1;
      client.on('error', () => client.destroy());
      if (this.holding) this.held.push(client);
      else this.forward(client);
    });
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', resolve);
    });
  }

  forward(client) {
    const upstream = net.connect(this.target, '127.0.0.1');
    const pair = { client, upstream };
    this.pairs.add(pair);
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => {
      client.destroy();
      this.pairs.delete(pair);
    });
    client.pipe(upstream);
    upstream.pipe(client);
  }

  cut() {
    this.holding = true;
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
  }

  resume() {
    this.holding = false;
    for (const client of this.held.splice(0)) if (!client.destroyed) this.forward(client);
  }

  close() {
    for (const client of this.held) client.destroy();
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    return new Promise((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }
}

const tid = (id, extra = '') => `[data-testid="${id}"]${extra}`;

/** Waits until `selector` is visible on `page`, failing with `what` (what the user should see). */
async function sees(page, selector, what, options = {}) {
  try {
    await page.locator(selector, options).first().waitFor({ state: 'visible', timeout: TIMEOUT });
  } catch (e) {
    throw new Error(`${page.user} does not see ${what} (${selector}): ${e.message.split('\n')[0]}`);
  }
}

async function count(page, selector, options = {}) {
  return page.locator(selector, options).count();
}

/** Polls `condition` (for what can only be seen as an absence) until it holds. */
async function until(condition, what) {
  const deadline = Date.now() + TIMEOUT;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

let shotNumber = 0;
async function screenshot(page, name) {
  shotNumber += 1;
  const file = path.join(SCREENSHOT_DIR, `${String(shotNumber).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file });
  report('screenshot', { file });
}

async function gatewayConnections(port) {
  // herald_connections has one series per app (docs/metrics.md): the gateway's total is their sum.
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const lines = text.split('\n').filter((l) => l.startsWith('herald_connections{') || l.startsWith('herald_connections '));
  return lines.length ? lines.reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0) : NaN;
}

/** A page for one user, with what its sockets carried recorded for the protocol-level checks. */
async function openPage(context, user, node) {
  const page = await context.newPage();
  page.user = user;
  page.sockets = [];
  page.messageEvents = []; // "message" events received over the WebSocket
  page.historyGets = []; // the page's requests for the backend's message history
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(String(error)));
  page.frames_ = []; // the last frames both ways, printed when a check fails
  const keep = (direction, payload) => {
    page.frames_.push(`${new Date().toISOString().slice(11, 23)} ${direction} ${String(payload).slice(0, 300)}`);
    if (page.frames_.length > 40) page.frames_.shift();
  };
  page.on('websocket', (ws) => {
    page.sockets.push(ws.url());
    keep('open', ws.url());
    ws.on('close', () => keep('close', ''));
    ws.on('framesent', ({ payload }) => keep('>>', payload));
    ws.on('framereceived', ({ payload }) => {
      keep('<<', payload);
      try {
        const frame = JSON.parse(String(payload));
        if (frame.event === 'message') page.messageEvents.push(JSON.parse(frame.data));
      } catch {
        // not JSON: nothing of ours
      }
    });
  });
  page.on('request', (request) => {
    if (request.method() === 'GET' && /^\/rooms\/[^/]+\/messages/.test(new URL(request.url()).pathname)) {
      page.historyGets.push(request.url());
    }
  });
  page.on('requestfinished', async (request) => {
    if (!request.url().includes('/pusher/')) return;
    const response = await request.response();
    keep('http', `${request.method()} ${new URL(request.url()).pathname} ${request.postData()} -> ${response?.status()}`);
  });
  await page.goto(`${CHAT_URL}/?node=${node}#/general`);
  await page.locator(tid(`login-${user}`)).click({ timeout: TIMEOUT });
  return page;
}

async function run(browser, proxy, pages) {
  const viewport = { width: 1000, height: 620 };
  const aliceContext = await browser.newContext({ viewport });
  const bobContext = await browser.newContext({ viewport });

  // 1. Alice signs in; her page connects to gateway A.
  const alice = await openPage(aliceContext, 'alice', 0);
  pages.push(alice);
  await sees(alice, tid('connection-badge', '[data-state="connected"]'), 'the Live badge');
  await sees(alice, tid('room', '[data-room="general"]'), 'the General room');
  await sees(alice, tid('member-alice', '[data-online="true"]'), 'herself online');
  await sees(alice, tid('messages', '[data-loaded="true"]'), 'the (empty) history');
  check(alice.sockets.length === 1 && new URL(alice.sockets[0]).port === String(GATEWAY_A),
    `alice should be connected to gateway A (${GATEWAY_A}), sockets: ${alice.sockets}`);
  report('alice signed in', { socket: alice.sockets[0] });
  await screenshot(alice, 'alice-signed-in');

  // 2. Bob signs in through the proxy to gateway B; each sees the other online.
  const bob = await openPage(bobContext, 'bob', 1);
  pages.push(bob);
  await sees(bob, tid('connection-badge', '[data-state="connected"]'), 'the Live badge');
  check(bob.sockets.length === 1 && new URL(bob.sockets[0]).port === String(PROXY_PORT) && proxy.accepted === 1,
    `bob should be connected through the proxy (${PROXY_PORT}) to gateway B, sockets: ${bob.sockets}`);
  await sees(bob, tid('member-alice', '[data-online="true"]'), 'Alice online in the room');
  await sees(bob, tid('member-bob', '[data-online="true"]'), 'himself online');
  await sees(alice, tid('member-bob', '[data-online="true"]'), 'Bob online in the room');
  await sees(alice, tid('person-bob', '[data-online="true"]'), 'Bob online in People (watchlist)');
  await sees(bob, tid('person-alice', '[data-online="true"]'), 'Alice online in People (watchlist)');
  await sees(alice, tid('online-count'), '"2 online"', { hasText: '2 online' });
  const perGateway = [await gatewayConnections(GATEWAY_A), await gatewayConnections(GATEWAY_B)];
  check(perGateway[0] === 1 && perGateway[1] === 1, `expected one connection per gateway, got ${perGateway}`);
  report('both online', { connectionsPerGateway: perGateway });
  await screenshot(alice, 'alice-sees-bob-online');
  await screenshot(bob, 'bob-sees-alice-online');

  // 3. Alice types: Bob sees the indicator (client events from gateway A to gateway B).
  const aliceInput = alice.locator(tid('composer-input'));
  await aliceInput.pressSequentially('Hi Bob! Herald works across gateways.', { delay: 15 });
  await sees(bob, tid('typing'), '"Alice is typing…"', { hasText: 'Alice is typing…' });
  check((await count(alice, tid('typing'), { hasText: 'typing' })) === 0, 'alice should not see herself typing');
  report('bob sees alice typing');
  await screenshot(bob, 'bob-sees-alice-typing');

  // 4. Alice sends. Her POST is held back: the message shows at once, pending, before the server
  //    has it (optimistic send); Bob has nothing yet. Then the POST goes through.
  let release;
  const held = new Promise((resolve) => {
    release = resolve;
  });
  let postsSeen = 0;
  await alice.route((url) => url.pathname === '/rooms/general/messages', async (route) => {
    if (route.request().method() === 'POST') {
      postsSeen += 1;
      await held;
    }
    await route.continue();
  });
  await aliceInput.press('Enter');
  const hiBob = { hasText: 'Hi Bob! Herald works across gateways.' };
  await sees(alice, tid('message', '[data-author="alice"][data-status="pending"]'), 'her message pending', hiBob);
  check(postsSeen === 1, `alice's POST should be held, saw ${postsSeen}`);
  check((await count(bob, tid('message'))) === 0, 'bob should have no message before the server stored it');
  report('alice sees her message pending');
  await screenshot(alice, 'alice-optimistic-pending');
  release();
  await sees(alice, tid('message', '[data-author="alice"][data-status="sent"]'), 'her message sent', hiBob);
  await sees(bob, tid('message', '[data-author="alice"][data-status="sent"]'), "Alice's message", hiBob);
  await until(async () => (await count(bob, tid('typing'), { hasText: 'typing' })) === 0,
    "bob's typing indicator to clear when Alice's message arrived");
  report('bob received the message');
  await screenshot(bob, 'bob-receives-message');

  // 5. Bob replies; Alice has her message once (her own socket was excluded from the trigger).
  const reply = { hasText: 'Hello Alice, loud and clear.' };
  await bob.locator(tid('composer-input')).fill('Hello Alice, loud and clear.');
  await bob.locator(tid('composer-send')).click();
  await sees(alice, tid('message', '[data-author="bob"][data-status="sent"]'), "Bob's reply", reply);
  await sees(bob, tid('message', '[data-author="bob"][data-status="sent"]'), 'his reply sent', reply);
  check((await count(alice, tid('message'), hiBob)) === 1, 'alice should see her message exactly once');
  check((await count(alice, tid('message'))) === 2 && (await count(bob, tid('message'))) === 2,
    'each page should show exactly two messages');
  const aliceGot = alice.messageEvents.map((m) => m.user_id);
  const bobGot = bob.messageEvents.map((m) => m.user_id);
  check(JSON.stringify(aliceGot) === '["bob"]', `alice's socket should get only Bob's message, got ${aliceGot}`);
  check(JSON.stringify(bobGot) === '["alice"]', `bob's socket should get only Alice's message, got ${bobGot}`);
  report('alice sees the reply', { aliceSocketGot: aliceGot, bobSocketGot: bobGot });
  await screenshot(alice, 'alice-sees-reply');

  // 6. Bob's connection drops (the proxy cuts it and holds his reconnection): his badge says so,
  //    and Alice sees him leave. She writes while he is away.
  proxy.cut();
  await sees(bob, tid('connection-badge', ':not([data-state="connected"])'), 'the badge leave Live');
  await sees(bob, tid('member-alice', '[data-online="false"]'), 'nobody online while he is offline');
  await sees(bob, tid('online-count'), '"reconnecting…"', { hasText: 'reconnecting…' });
  await sees(alice, tid('member-bob', '[data-online="false"]'), 'Bob offline in the room');
  await sees(alice, tid('online-count'), '"1 online"', { hasText: '1 online' });
  const missed = { hasText: 'Did you get this while you were away?' };
  await aliceInput.fill('Did you get this while you were away?');
  await aliceInput.press('Enter');
  await sees(alice, tid('message', '[data-author="alice"][data-status="sent"]'), 'her second message sent', missed);
  report('bob lost his connection', { badge: await bob.locator(tid('connection-badge')).getAttribute('data-state') });
  await screenshot(bob, 'bob-connection-lost');
  await screenshot(alice, 'alice-sees-bob-dropped');

  // 7. Bob's connection comes back: pusher-js resubscribes, and the hooks (herald-channels-recovery) ask
  //    Herald for what the channel carried meanwhile: the missed message arrives over the socket,
  //    once, and the page makes no HTTP request for it.
  const historyGetsBefore = bob.historyGets.length;
  proxy.resume();
  await sees(bob, tid('connection-badge', '[data-state="connected"]'), 'the Live badge again');
  await sees(bob, tid('message', '[data-author="alice"]'), 'the message he missed', missed);
  await sees(alice, tid('member-bob', '[data-online="true"]'), 'Bob online again');
  await sees(bob, tid('member-alice', '[data-online="true"]'), 'Alice online again');
  const replayed = bob.messageEvents.filter((m) => m.text.startsWith('Did you get this'));
  check(replayed.length === 1, `the missed message should arrive over the socket once, got ${replayed.length}`);
  check(bob.historyGets.length === historyGetsBefore,
    `no history request after the reconnection, got ${bob.historyGets.slice(historyGetsBefore)}`);
  check((await count(bob, tid('message'))) === 3, 'bob should show three messages after catching up');
  check((await count(bob, tid('message'), missed)) === 1, 'the missed message should show once');
  report('bob caught up: Herald replayed what he missed', { sockets: bob.sockets.length, historyGets: bob.historyGets.length });
  await screenshot(bob, 'bob-reconnected-recovered');

  // 8. Bob closes his page: Alice sees him go offline.
  await bob.close();
  await sees(alice, tid('member-bob', '[data-online="false"]'), 'Bob offline in the room');
  await sees(alice, tid('person-bob', '[data-online="false"]'), 'Bob offline in People (watchlist)');
  await sees(alice, tid('online-count'), '"1 online"', { hasText: '1 online' });
  report('alice sees bob offline');
  await screenshot(alice, 'alice-sees-bob-offline');

  // 9. Bob comes back in a new page (still signed in): the whole conversation, from the history.
  const bobAgain = await bobContext.newPage();
  bobAgain.user = 'bob (new page)';
  bobAgain.errors = [];
  bobAgain.on('pageerror', (error) => bobAgain.errors.push(String(error)));
  pages.push(bobAgain);
  await bobAgain.goto(`${CHAT_URL}/?node=1#/general`);
  await sees(bobAgain, tid('connection-badge', '[data-state="connected"]'), 'the Live badge');
  await sees(bobAgain, tid('messages', '[data-loaded="true"]'), 'the history');
  const texts = await bobAgain.locator(tid('message-text')).allTextContents();
  check(JSON.stringify(texts) === JSON.stringify(['Hi Bob! Herald works across gateways.',
    'Hello Alice, loud and clear.', 'Did you get this while you were away?']), `history in order, got ${texts}`);
  await sees(alice, tid('member-bob', '[data-online="true"]'), 'Bob back online');
  report('bob is back with the history', { texts });
  await screenshot(bobAgain, 'bob-back-full-history');

  // 10. Bob moves to Random: in General he is gone, in the app he is still online. Alice mentions
  //     him in General: the backend sends him a server-to-user event, shown wherever he is.
  await bobAgain.locator(tid('room-random')).click();
  await sees(bobAgain, tid('room', '[data-room="random"]'), 'the Random room');
  await sees(alice, tid('member-bob', '[data-online="false"]'), 'Bob gone from General');
  await sees(alice, tid('person-bob', '[data-online="true"]'), 'Bob still online in People');
  await aliceInput.fill('@bob are you in Random?');
  await aliceInput.press('Enter');
  await sees(bobAgain, tid('toast'), 'the mention', { hasText: 'Alice mentioned you in #general' });
  check((await count(bobAgain, tid('message'), { hasText: 'are you in Random' })) === 0,
    "General's message should not show in Random");
  report('bob got the mention in another room');
  await screenshot(bobAgain, 'bob-gets-mention');

  const errors = pages.flatMap((p) => p.errors.map((e) => `${p.user}: ${e}`));
  check(errors.length === 0, `uncaught errors in the pages:\n${errors.join('\n')}`);
}

async function main() {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  const proxy = new HoldingProxy(PROXY_PORT, GATEWAY_B);
  await proxy.start();
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Playwright gives each launch a fresh temporary profile (user data dir) and removes it after.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const pages = [];
  try {
    await run(browser, proxy, pages);
    report('done');
  } catch (error) {
    report('failed', { error: String(error.message ?? error) });
    for (const page of pages) {
      if (page.isClosed()) continue;
      const badge = await page.locator(tid('connection-badge')).getAttribute('data-state').catch(() => null);
      const members = await page.locator('[data-testid^="member-"]').evaluateAll((els) =>
        els.map((el) => `${el.dataset.testid}=${el.dataset.online}`)).catch(() => []);
      report('state', { user: page.user, badge, members, frames: page.frames_ ?? [] });
      const file = path.join(SCREENSHOT_DIR, `failure-${page.user.replace(/\W+/g, '-')}.png`);
      await page.screenshot({ path: file }).then(() => report('screenshot', { file }), () => undefined);
    }
    process.exitCode = 1;
  } finally {
    await browser.close();
    await proxy.close();
  }
}

await main();
