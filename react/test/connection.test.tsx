import { useEffect } from 'react';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type Pusher from 'pusher-js';
import {
  HeraldProvider,
  useChannel,
  useChannelStatus,
  useConnectionState,
  useEvent,
  usePresenceChannel,
  useUser,
} from '../src';
import { startHerald, type HeraldServer } from './helpers/herald';
import { startAuthServer, type AuthServer } from './helpers/auth';
import { makeClient, serverSdk } from './helpers/clients';
import { mount, waitFor, type Mounted } from './helpers/react';

let herald: HeraldServer;
let auth: AuthServer;
let client: Pusher | null = null;
let view: Mounted | null = null;

beforeAll(async () => {
  [herald, auth] = await Promise.all([startHerald(), startAuthServer()]);
});

afterAll(async () => {
  view?.unmount();
  client?.disconnect();
  await Promise.all([herald?.stop(), auth?.close()]);
});

/** A status badge that also records every state it rendered. */
function Badge({ history }: { history: string[] }) {
  const state = useConnectionState();
  useEffect(() => {
    if (history[history.length - 1] !== state) history.push(state);
  }, [state, history]);
  return <span data-testid="badge">{state}</span>;
}

function Feed({ log }: { log: unknown[] }) {
  const channel = useChannel('news');
  const { status } = useChannelStatus(channel);
  useEvent(channel, 'headline', (data) => log.push(data));
  return <span data-testid="feed">{status}</span>;
}

function Room() {
  const { count, subscribed } = usePresenceChannel('presence-room');
  return <span data-testid="room">{subscribed ? String(count) : 'out'}</span>;
}

function Account() {
  const { user } = useUser();
  return <span data-testid="account">{user ? user.id : 'signed out'}</span>;
}

describe('useConnectionState', () => {
  it('shows connected, then connecting/unavailable while the server is down, then connected again', async () => {
    // unavailableTimeout shortened from pusher-js's 10 s so the test stays quick.
    client = makeClient({ heraldPort: herald.port, authUrl: auth.url, userId: 'u1', unavailableTimeout: 1000 });
    const history: string[] = [];
    const log: unknown[] = [];
    view = mount(
      <HeraldProvider client={client}>
        <Badge history={history} />
        <Feed log={log} />
        <Room />
        <Account />
      </HeraldProvider>,
    );
    await waitFor(() => view!.text('badge') === 'connected' && view!.text('feed') === 'subscribed');
    await waitFor(() => view!.text('room') === '1' && view!.text('account') === 'u1');

    // Crash the server (no goodbye frame), keep it down past unavailableTimeout.
    await herald.stop('SIGKILL');
    // As soon as pusher-js is reconnecting, the channel and the roster are no longer live (not only
    // once it gives up a second later): pusher-js resets them right after emitting state_change.
    await waitFor(() => view!.text('badge') === 'connecting', { timeout: 10_000 });
    await waitFor(() => view!.text('feed') === 'pending' && view!.text('room') === 'out', { timeout: 500 });
    await waitFor(() => view!.text('badge') === 'unavailable', { timeout: 10_000 });
    expect(view.text('feed')).toBe('pending');
    expect(view.text('room')).toBe('out');
    expect(view.text('account')).toBe('signed out');

    // Same port, fresh process: pusher-js reconnects and resubscribes by itself.
    // Its retry after a refused connection waits for the attempt's 15 s
    // timeout, so this takes a while.
    await herald.start();
    await waitFor(() => view!.text('badge') === 'connected', { timeout: 45_000 });
    await waitFor(() => view!.text('feed') === 'subscribed' && view!.text('room') === '1');
    // pusher-js signs in again after reconnecting.
    await waitFor(() => view!.text('account') === 'u1');

    expect(history[0]).toBe('connecting');
    const firstConnected = history.indexOf('connected');
    const afterOutage = history.slice(firstConnected + 1);
    expect(afterOutage).toContain('connecting');
    expect(afterOutage).toContain('unavailable');
    expect(afterOutage[afterOutage.length - 1]).toBe('connected');

    // Events flow again through the resubscribed channel.
    await serverSdk(herald.port).trigger('news', 'headline', { title: 'back' });
    await waitFor(() => log.length === 1);
    expect(log).toEqual([{ title: 'back' }]);
  }, 90_000);
});
