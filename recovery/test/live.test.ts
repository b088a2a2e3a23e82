// The helper on real pusher-js clients (7 and 8, Node builds) against a real `herald serve`, events
// triggered with the npm `pusher` server SDK.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { HeraldRecovery, recoveryFor, type RecoveryResult } from '../src';
import { APP, PLAIN_APP, startHerald, type HeraldServer } from './helpers/herald';
import { PUSHER_BUILDS, clientOptions, serverSdk, sleep, waitFor, type PusherClass } from './helpers/clients';

type AppCredentials = { id: string; key: string; secret: string };

let herald: HeraldServer;
const clients: Array<{ disconnect(): void }> = [];

beforeAll(async () => {
  herald = await startHerald();
});

afterEach(() => {
  for (const client of clients.splice(0)) client.disconnect();
});

afterAll(async () => {
  await herald?.stop();
});

function connect(Pusher: PusherClass, key: string = APP.key) {
  const pusher = new Pusher(key, clientOptions(herald.port));
  clients.push(pusher);
  return pusher;
}

async function triggerRange(channel: string, from: number, to: number, app: AppCredentials = APP, socketId?: string) {
  const sdk = serverSdk(herald.port, app);
  for (let n = from; n < to; n++) {
    await sdk.trigger(channel, 'msg', { n }, socketId ? { socket_id: socketId } : undefined);
  }
}

function follow(recovery: HeraldRecovery, name: string) {
  const got: number[] = [];
  const positions: string[] = [];
  const results: RecoveryResult[] = [];
  const channel = recovery.subscribe(name);
  channel.bind<{ n: number }>('msg', (data, meta) => {
    got.push(data.n);
    if (meta.position) positions.push(meta.position);
  });
  channel.onRecovery((r) => results.push(r));
  return { channel, got, positions, results };
}

let counter = 0;
const unique = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${(counter += 1)}`;

describe.each(PUSHER_BUILDS)('with %s', (_label, Pusher) => {
  it('delivers live events with their positions, once and in order', async () => {
    const pusher = connect(Pusher);
    const recovery = recoveryFor(pusher);
    expect(recovery.supported).toBe(true);
    const name = unique('room');
    const { channel, got, positions } = follow(recovery, name);
    // pusher-js itself ignores the extra field: its own bindings get the same events.
    const direct: number[] = [];
    pusher.channel(name).bind('msg', (data: { n: number }) => direct.push(data.n));
    await waitFor(() => channel.position, 'the subscription position');
    await triggerRange(name, 0, 5);
    await waitFor(() => got.length === 5 && direct.length === 5, 'five events');
    expect(got).toEqual([0, 1, 2, 3, 4]);
    expect(direct).toEqual(got);
    expect(positions.map((p) => Number(p.split('-')[1]))).toEqual([1, 2, 3, 4, 5]);
  });

  it('recovers what was published while disconnected', async () => {
    const pusher = connect(Pusher);
    const recovery = recoveryFor(pusher);
    const name = unique('room');
    const { channel, got, results } = follow(recovery, name);
    await waitFor(() => channel.position, 'the subscription position');
    await triggerRange(name, 0, 3);
    await waitFor(() => got.length === 3, 'the first events');
    pusher.disconnect();
    await waitFor(() => pusher.connection.state === 'disconnected', 'disconnected');
    await triggerRange(name, 3, 53);
    pusher.connect();
    await waitFor(() => results.length === 1, 'the recovery');
    await triggerRange(name, 53, 55);
    await waitFor(() => got.length === 55, 'every event');
    await sleep(100);
    expect(got).toEqual(Array.from({ length: 55 }, (_, i) => i));
    expect(results[0]).toMatchObject({ recovered: true, count: 50, cause: 'resubscribe' });
    expect(channel.recovered).toBe(true);
  });

  it('sends no recovery request for the events its own socket was excluded from', async () => {
    const pusher = connect(Pusher);
    const recovery = recoveryFor(pusher);
    const sent = vi.spyOn(pusher, 'send_event');
    const name = unique('room');
    const { channel, got } = follow(recovery, name);
    await waitFor(() => channel.position && pusher.connection.socket_id, 'subscribed');
    await triggerRange(name, 0, 1);
    await triggerRange(name, 1, 2, APP, pusher.connection.socket_id);
    await triggerRange(name, 2, 3);
    await waitFor(() => got.length === 2, 'the events not excluded');
    expect(got).toEqual([0, 2]);
    expect(channel.position?.endsWith('-3')).toBe(true);
    expect(sent.mock.calls.filter(([event]) => event === 'herald:recover')).toEqual([]);
  });

  it('reports recovered: false when the history was lost (a restarted Herald in memory mode)', async () => {
    const pusher = connect(Pusher);
    const recovery = recoveryFor(pusher);
    const name = unique('room');
    const { channel, got, results } = follow(recovery, name);
    await waitFor(() => channel.position, 'the subscription position');
    await triggerRange(name, 0, 2);
    await waitFor(() => got.length === 2, 'the first events');
    // Away while Herald restarts (pusher-js's own retry schedule after a refused connection is not
    // what this test is about).
    pusher.disconnect();
    await waitFor(() => pusher.connection.state === 'disconnected', 'disconnected');
    await herald.stop();
    await herald.start();
    await triggerRange(name, 2, 3); // lost to the client: before its new subscription, in a new history
    pusher.connect();
    await waitFor(() => results.length === 1, 'the recovery outcome');
    expect(results[0]).toMatchObject({ recovered: false, reason: 'history_lost', cause: 'resubscribe' });
    await triggerRange(name, 3, 4);
    await waitFor(() => got.length === 3, 'live events again');
    expect(got).toEqual([0, 1, 3]);
  });

  it('reports recovered: false after a reconnection on a channel without history', async () => {
    const pusher = connect(Pusher, PLAIN_APP.key);
    const recovery = recoveryFor(pusher);
    const name = unique('room');
    const { channel, got, results } = follow(recovery, name);
    await waitFor(() => pusher.channel(name)?.subscribed, 'subscribed');
    await triggerRange(name, 0, 1, PLAIN_APP);
    await waitFor(() => got.length === 1, 'a live event');
    pusher.disconnect();
    await waitFor(() => pusher.connection.state === 'disconnected', 'disconnected');
    pusher.connect();
    await waitFor(() => results.length === 1, 'the outcome');
    expect(results[0]).toMatchObject({ recovered: false, reason: 'no_history' });
    expect(channel.position).toBe(null);
  });
});

describe('on a pusher-js version it does not know', () => {
  it('warns, delivers events without recovery and says so after a reconnection', async () => {
    const [, Pusher8] = PUSHER_BUILDS[0];
    const warnings: string[] = [];
    const pusher = connect(Pusher8);
    // What a later pusher-js would report (the tap reads the version where pusher-js keeps it).
    (pusher as unknown as { timeline: { options: { version: string } } }).timeline.options.version = '99.0.0';
    const recovery = new HeraldRecovery(pusher, { warn: (m) => warnings.push(m) });
    expect(recovery.supported).toBe(false);
    expect(warnings).toEqual([expect.stringContaining('pusher-js 99.0.0 is not a version herald-channels-recovery knows')]);
    const name = unique('room');
    const { got, results } = follow(recovery, name);
    await waitFor(() => pusher.channel(name)?.subscribed, 'subscribed');
    await triggerRange(name, 0, 2);
    await waitFor(() => got.length === 2, 'events');
    pusher.disconnect();
    await waitFor(() => pusher.connection.state === 'disconnected', 'disconnected');
    pusher.connect();
    await waitFor(() => results.length === 1, 'the outcome');
    expect(results[0]).toMatchObject({ recovered: false, reason: 'unsupported' });
    expect(got).toEqual([0, 1]);
  });
});
