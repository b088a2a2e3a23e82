// @vitest-environment node
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createElement } from 'react';
import { renderToString } from 'react-dom/server';
import { afterAll, describe, expect, it, vi } from 'vitest';

const BROWSER_GLOBALS = ['window', 'document', 'navigator', 'location', 'WebSocket', 'XMLHttpRequest', 'localStorage'];

/**
 * Turns every browser global into a getter that records its name, and counts
 * TCP connection attempts: server rendering must do neither.
 */
function trapBrowserAndNetwork() {
  const touched: string[] = [];
  const saved = BROWSER_GLOBALS.map((name) => [name, Object.getOwnPropertyDescriptor(globalThis, name)] as const);
  for (const name of BROWSER_GLOBALS) {
    Object.defineProperty(globalThis, name, {
      configurable: true,
      get() {
        touched.push(name);
        return undefined;
      },
    });
  }
  const connect = vi.spyOn(net.Socket.prototype, 'connect');
  return {
    touched,
    connections: () => connect.mock.calls.length,
    restore() {
      connect.mockRestore();
      for (const [name, descriptor] of saved) {
        if (descriptor) Object.defineProperty(globalThis, name, descriptor);
        else delete (globalThis as Record<string, unknown>)[name];
      }
    },
  };
}

describe('server rendering', () => {
  it('imports and renders every hook without touching window or opening a socket', async () => {
    expect(typeof window).toBe('undefined');
    const trap = trapBrowserAndNetwork();
    const errors = vi.spyOn(console, 'error');
    const warnings = vi.spyOn(console, 'warn');
    try {
      const herald = await import('../src');
      function Everything() {
        const client = herald.usePusher();
        const state = herald.useConnectionState();
        const channel = herald.useChannel('news');
        const { status } = herald.useChannelStatus(channel);
        herald.useEvent('news', 'headline', () => undefined);
        herald.useEvent(channel, 'other', () => undefined);
        const presence = herald.usePresenceChannel<{ name: string }>('presence-room');
        const trigger = herald.useClientTrigger('private-chat');
        const me = herald.useUser();
        herald.useUserEvent('note', () => undefined);
        return createElement(
          'p',
          null,
          [
            `client=${client === null ? 'none' : 'some'}`,
            `state=${state}`,
            `channel=${channel === null ? 'none' : 'some'}`,
            `status=${status}`,
            `members=${presence.count}/${presence.members.size}/${presence.subscribed}`,
            `trigger=${typeof trigger}`,
            `user=${me.signedIn}/${me.online.size}`,
          ].join(' '),
        );
      }
      const tree = createElement(
        herald.HeraldProvider,
        { appKey: 'key-1', options: { cluster: 'herald', wsHost: '127.0.0.1', wsPort: 1, forceTLS: false } },
        createElement(Everything),
      );
      const html = renderToString(tree);
      expect(html).toBe(
        '<p>client=none state=initialized channel=none status=idle members=0/0/false trigger=function user=false/0</p>',
      );
      expect(trap.touched).toEqual([]);
      expect(trap.connections()).toBe(0);
      expect(errors).not.toHaveBeenCalled();
      expect(warnings).not.toHaveBeenCalled();
      // pusher-js itself is only imported by the provider's effect, in a browser.
      const loaded = Object.keys(createRequire(import.meta.url).cache);
      expect(loaded.filter((path) => path.includes('/pusher-js/'))).toEqual([]);
    } finally {
      errors.mockRestore();
      warnings.mockRestore();
      trap.restore();
    }
  });

  describe('the built package', () => {
    // Build into a scratch folder inside node_modules so 'react' resolves from there.
    const outDir = mkdtempSync(join(process.cwd(), 'node_modules', '.herald-react-dist-'));
    afterAll(() => rmSync(outDir, { recursive: true, force: true }));

    it('loads as CJS and ESM in plain Node and renders to a string', () => {
      execFileSync(join('node_modules', '.bin', 'tsup'), ['--out-dir', outDir, '--silent'], {
        stdio: 'pipe',
        env: { ...process.env, HERALD_BUILD_JS_ONLY: '1' },
      });
      const script = `
        const net = require('node:net');
        let connects = 0;
        const connect = net.Socket.prototype.connect;
        net.Socket.prototype.connect = function (...args) { connects += 1; return connect.apply(this, args); };
        const { createElement } = require('react');
        const { renderToString } = require('react-dom/server');
        const cjs = require(${JSON.stringify(join(outDir, 'index.cjs'))});
        import(${JSON.stringify(join(outDir, 'index.js'))}).then((esm) => {
          const render = (lib) => renderToString(createElement(lib.HeraldProvider,
            { appKey: 'k', options: { cluster: 'herald' } },
            createElement(() => lib.useConnectionState())));
          console.log(JSON.stringify({
            cjs: render(cjs), esm: render(esm),
            exports: Object.keys(esm).sort(), same: Object.keys(cjs).sort().join() === Object.keys(esm).sort().join(),
            alias: esm.PusherProvider === esm.HeraldProvider,
            window: typeof window, connects,
          }));
        });
      `;
      const result = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }));
      expect(result).toMatchObject({ cjs: 'initialized', esm: 'initialized', same: true, alias: true, window: 'undefined', connects: 0 });
      expect(result.exports).toEqual(
        expect.arrayContaining([
          'HeraldProvider',
          'PusherProvider',
          'usePusher',
          'useChannel',
          'useChannelStatus',
          'useEvent',
          'usePresenceChannel',
          'useConnectionState',
          'useClientTrigger',
          'useUser',
          'useUserEvent',
          'ClientEventError',
        ]),
      );
    });
  });
});
