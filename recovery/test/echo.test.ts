// The helper on laravel-echo's pusher-js client: channels joined and events named the Echo way.
import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { recoveryFor, type RecoveryResult } from '../src';
import { APP, startHerald, type HeraldServer } from './helpers/herald';
import { serverSdk, sleep, waitFor } from './helpers/clients';

let herald: HeraldServer;
let echo: Echo<'pusher'> | null = null;

beforeAll(async () => {
  herald = await startHerald();
});

afterEach(() => {
  echo?.disconnect();
  echo = null;
});

afterAll(async () => {
  await herald?.stop();
});

describe('laravel-echo', () => {
  it('recovers the broadcasts missed while disconnected, once and in order', async () => {
    echo = new Echo({
      broadcaster: 'pusher',
      Pusher,
      key: APP.key,
      cluster: 'herald',
      wsHost: '127.0.0.1',
      wsPort: herald.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
    });
    const pusher = echo.connector.pusher;
    const recovery = recoveryFor(pusher);
    expect(recovery.supported).toBe(true);
    const name = `room-echo-${Date.now().toString(36)}`;
    // Echo subscribes; the helper follows the same channel. Laravel broadcasts App\Events\X as that name.
    const viaEcho: number[] = [];
    echo.channel(name).listen('MessageSent', (e: { n: number }) => viaEcho.push(e.n));
    const got: number[] = [];
    const results: RecoveryResult[] = [];
    const channel = recovery.channel(name);
    channel.bind<{ n: number }>('App\\Events\\MessageSent', (data) => got.push(data.n));
    channel.onRecovery((r) => results.push(r));
    await waitFor(() => channel.position, 'the subscription');

    const sdk = serverSdk(herald.port);
    const broadcast = async (from: number, to: number) => {
      for (let n = from; n < to; n++) await sdk.trigger(name, 'App\\Events\\MessageSent', { n });
    };
    await broadcast(0, 3);
    await waitFor(() => got.length === 3, 'live broadcasts');
    // The connection drops and comes back (echo.connect() would make a new client: pusher-js's own
    // reconnection, as after a network loss, keeps this one).
    pusher.disconnect();
    await waitFor(() => pusher.connection.state === 'disconnected', 'disconnected');
    await broadcast(3, 23);
    pusher.connect();
    await waitFor(() => results.length === 1, 'the recovery');
    await broadcast(23, 25);
    await waitFor(() => got.length === 25, 'every broadcast');
    await sleep(100);
    expect(got).toEqual(Array.from({ length: 25 }, (_, i) => i));
    expect(results[0]).toMatchObject({ recovered: true, count: 20 });
    // Echo's own listener saw the live ones and, through pusher-js, the replayed ones too.
    expect(viaEcho).toEqual(Array.from({ length: 25 }, (_, i) => i));
  });
});
