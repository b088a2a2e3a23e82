import PusherServer from 'pusher';
import Pusher8 from 'pusher-js';
import Pusher7 from 'pusher-js-7';
import { APP } from './herald';

export type PusherClass = typeof Pusher8;

/** The pinned pusher-js versions the helper is checked against (their Node builds). */
export const PUSHER_BUILDS: Array<[string, PusherClass]> = [
  ['pusher-js 8', Pusher8],
  ['pusher-js 7', Pusher7 as unknown as PusherClass],
];

export function clientOptions(port: number) {
  return {
    cluster: 'herald',
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws' as const],
    disableStats: true,
  };
}

export function serverSdk(port: number, app: { id: string; key: string; secret: string } = APP): PusherServer {
  return new PusherServer({ appId: app.id, key: app.key, secret: app.secret, host: '127.0.0.1', port: String(port), useTLS: false });
}

export async function waitFor<T>(check: () => T, what: string, timeout = 15_000): Promise<T> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const result = check();
    if (result) return result;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
