import { StrictMode, useState } from 'react';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type Pusher from 'pusher-js';
import type PusherServer from 'pusher';
import { recoveryFor } from 'herald-channels-recovery';
import { HeraldProvider, useChannel, useChannelStatus, useEvent } from '../src';
import { startHerald, type HeraldServer } from './helpers/herald';
import { startAuthServer, type AuthServer } from './helpers/auth';
import { channelInfo, makeClient, recordSentFrames, serverSdk } from './helpers/clients';
import { mount, sleep, waitFor, type Mounted } from './helpers/react';

let herald: HeraldServer;
let auth: AuthServer;
let sdk: PusherServer;
let client: Pusher | null = null;
let view: Mounted | null = null;
let wire: ReturnType<typeof recordSentFrames>;

beforeAll(async () => {
  [herald, auth] = await Promise.all([startHerald(), startAuthServer()]);
  sdk = serverSdk(herald.port);
  wire = recordSentFrames();
});

afterEach(() => {
  view?.unmount();
  view = null;
  client?.disconnect();
  client = null;
  wire.frames.length = 0;
});

afterAll(async () => {
  wire.restore();
  await Promise.all([herald?.stop(), auth?.close()]);
});

type Received = Array<{ who: string; data: unknown }>;

/** One subscriber: shows the channel status and logs every 'message' event. */
function Listener({ id, channel, log }: { id: string; channel: string; log: Received }) {
  const ch = useChannel(channel);
  const { status } = useChannelStatus(ch);
  useEvent<{ n: number }>(ch, 'message', (data) => log.push({ who: id, data }));
  return <span data-testid={`status-${id}`}>{status}</span>;
}

function connect(): Pusher {
  client = makeClient({ heraldPort: herald.port, authUrl: auth.url });
  return client;
}

async function connected(): Promise<Pusher> {
  const pusher = connect();
  await waitFor(() => pusher.connection.state === 'connected');
  return pusher;
}

describe('useChannel reference counting', () => {
  it('keeps the channel for the component still mounted when another one unmounts', async () => {
    const pusher = connect();
    const log: Received = [];
    const Tree = ({ showA, showB }: { showA: boolean; showB: boolean }) => (
      <HeraldProvider client={pusher}>
        {showA && <Listener id="a" channel="room-shared" log={log} />}
        {showB && <Listener id="b" channel="room-shared" log={log} />}
      </HeraldProvider>
    );
    view = mount(<Tree showA showB />);
    await waitFor(() => view!.text('status-a') === 'subscribed' && view!.text('status-b') === 'subscribed');
    expect(wire.count('pusher:subscribe', 'room-shared')).toBe(1);
    expect(await channelInfo(sdk, 'room-shared')).toMatchObject({ occupied: true, subscription_count: 1 });

    await sdk.trigger('room-shared', 'message', { n: 1 });
    await waitFor(() => log.length === 2);
    expect(log.map((r) => r.who).sort()).toEqual(['a', 'b']);

    // A naive hook would unsubscribe here and B would go deaf.
    view.render(<Tree showA={false} showB />);
    await sleep(150);
    expect(wire.count('pusher:unsubscribe', 'room-shared')).toBe(0);
    expect(await channelInfo(sdk, 'room-shared')).toMatchObject({ occupied: true, subscription_count: 1 });

    log.length = 0;
    await sdk.trigger('room-shared', 'message', { n: 2 });
    await waitFor(() => log.length === 1);
    await sleep(100);
    expect(log).toEqual([{ who: 'b', data: { n: 2 } }]);

    // The last user leaving really unsubscribes, once.
    view.render(<Tree showA={false} showB={false} />);
    await waitFor(() => wire.count('pusher:unsubscribe', 'room-shared') === 1);
    await waitFor(async () => !(await channelInfo(sdk, 'room-shared')).occupied);
    expect(await channelInfo(sdk, 'room-shared')).toMatchObject({ occupied: false });
    expect(pusher.channel('room-shared')).toBeUndefined();
  });

  it.each([
    ['before the connection is up', connect],
    ['on an open connection', connected],
  ])('subscribes once and delivers each event once under StrictMode (mounted %s)', async (_when, open) => {
    const pusher = await open();
    const log: Received = [];
    const Tree = ({ show }: { show: boolean }) => (
      <StrictMode>
        <HeraldProvider client={pusher}>{show && <Listener id="s" channel="room-strict" log={log} />}</HeraldProvider>
      </StrictMode>
    );
    view = mount(<Tree show />);
    await waitFor(() => view!.text('status-s') === 'subscribed');
    await sleep(150);
    // Exactly one subscribe on the wire, none undone, one subscription on the server.
    expect(wire.count('pusher:subscribe', 'room-strict')).toBe(1);
    expect(wire.count('pusher:unsubscribe', 'room-strict')).toBe(0);
    expect(await channelInfo(sdk, 'room-strict')).toMatchObject({ occupied: true, subscription_count: 1 });

    await sdk.trigger('room-strict', 'message', { n: 1 });
    await waitFor(() => log.length >= 1);
    await sleep(200);
    expect(log).toEqual([{ who: 's', data: { n: 1 } }]);

    view.render(<Tree show={false} />);
    await waitFor(() => wire.count('pusher:unsubscribe', 'room-strict') === 1);
    await waitFor(async () => !(await channelInfo(sdk, 'room-strict')).occupied);
  });

  it('hands a subscribed channel from one component to the next without leaving it', async () => {
    const pusher = await connected();
    const log: Received = [];
    const Tree = ({ first }: { first: boolean }) => (
      <HeraldProvider client={pusher}>
        {first ? (
          <Listener key="old" id="old" channel="room-handover" log={log} />
        ) : (
          <Listener key="new" id="new" channel="room-handover" log={log} />
        )}
      </HeraldProvider>
    );
    view = mount(<Tree first />);
    await waitFor(() => view!.text('status-old') === 'subscribed');
    // The only holder unmounts and another mounts in the same commit: the
    // deferred release is cancelled, so nothing goes over the wire.
    view.render(<Tree first={false} />);
    await waitFor(() => view!.text('status-new') === 'subscribed');
    await sleep(150);
    expect(wire.count('pusher:unsubscribe', 'room-handover')).toBe(0);
    expect(wire.count('pusher:subscribe', 'room-handover')).toBe(1);
    await sdk.trigger('room-handover', 'message', { n: 1 });
    await waitFor(() => log.length === 1);
    expect(log).toEqual([{ who: 'new', data: { n: 1 } }]);
  });

  it('moves the subscription when the channel name changes', async () => {
    const pusher = connect();
    const log: Received = [];
    view = mount(
      <HeraldProvider client={pusher}>
        <Listener id="m" channel="room-one" log={log} />
      </HeraldProvider>,
    );
    await waitFor(() => view!.text('status-m') === 'subscribed');
    view.render(
      <HeraldProvider client={pusher}>
        <Listener id="m" channel="room-two" log={log} />
      </HeraldProvider>,
    );
    await waitFor(() => wire.count('pusher:unsubscribe', 'room-one') === 1);
    await waitFor(() => view!.text('status-m') === 'subscribed' && pusher.channel('room-two')?.subscribed);
    await sdk.trigger(['room-one', 'room-two'], 'message', { n: 3 });
    await waitFor(() => log.length === 1);
    await sleep(100);
    expect(log).toEqual([{ who: 'm', data: { n: 3 } }]);
    expect(wire.count('pusher:subscribe', 'room-two')).toBe(1);
  });
});

describe('useEvent', () => {
  it('always calls the latest callback without rebinding or resubscribing', async () => {
    const pusher = connect();
    const seen: string[] = [];
    let setLabel: (label: string) => void = () => undefined;
    function Labelled() {
      const [label, set] = useState('first');
      setLabel = set;
      // An inline callback: a new function on every render.
      useEvent<{ n: number }>('room-latest', 'message', (data) => seen.push(`${label}:${data.n}`));
      const { status } = useChannelStatus(useChannel('room-latest'));
      return <span data-testid="label">{`${label} ${status}`}</span>;
    }
    view = mount(
      <HeraldProvider client={pusher}>
        <Labelled />
      </HeraldProvider>,
    );
    await waitFor(() => view!.text('label') === 'first subscribed');
    const boundBefore = countBindings(pusher, 'room-latest', 'message');
    await sdk.trigger('room-latest', 'message', { n: 1 });
    await waitFor(() => seen.length === 1);

    setLabel('second');
    await waitFor(() => view!.text('label') === 'second subscribed');
    await sdk.trigger('room-latest', 'message', { n: 2 });
    await waitFor(() => seen.length === 2);
    await sleep(100);

    expect(seen).toEqual(['first:1', 'second:2']);
    expect(countBindings(pusher, 'room-latest', 'message')).toBe(boundBefore);
    expect(boundBefore).toBe(1);
    expect(wire.count('pusher:subscribe', 'room-latest')).toBe(1);
    expect(wire.count('pusher:unsubscribe', 'room-latest')).toBe(0);
  });
});

describe('useChannelStatus', () => {
  it('reports a subscription the server refuses as failed', async () => {
    client = makeClient({ heraldPort: herald.port, authUrl: auth.url, authPath: '/pusher/bad-auth' });
    const pusher = client;
    function Private() {
      const { status, error } = useChannelStatus(useChannel('private-refused'));
      return <span data-testid="private">{status === 'failed' ? `failed ${JSON.stringify(error)}` : status}</span>;
    }
    view = mount(
      <HeraldProvider client={pusher}>
        <Private />
      </HeraldProvider>,
    );
    await waitFor(() => view!.text('private')?.startsWith('failed'));
    expect(auth.calls['/pusher/bad-auth']?.length).toBe(1);
    expect(await channelInfo(sdk, 'private-refused')).toMatchObject({ occupied: false });

    // Mounting it again later tries again (pusher-js alone would keep the
    // refused channel "pending" forever and never ask again).
    view.render(<HeraldProvider client={pusher}>{null}</HeraldProvider>);
    await sleep(50);
    view.render(
      <HeraldProvider client={pusher}>
        <Private />
      </HeraldProvider>,
    );
    await waitFor(() => auth.calls['/pusher/bad-auth']?.length === 2);
    await waitFor(() => view!.text('private')?.startsWith('failed'));
    expect(wire.count('pusher:subscribe', 'private-refused')).toBe(2);
  });
});

/** How many callbacks are bound for an event on a channel: useEvent binds through the client's
 * herald-channels-recovery helper (pusher-js itself holds none). */
function countBindings(pusher: Pusher, channel: string, event: string): number {
  const onPusher = (pusher.channel(channel) as unknown as { callbacks: { get(name: string): unknown[] | undefined } })
    .callbacks.get(event)?.length ?? 0;
  const helper = recoveryFor(pusher).channel(channel) as unknown as { callbacks: Map<string, unknown[]> };
  return onPusher + (helper.callbacks.get(event)?.length ?? 0);
}
