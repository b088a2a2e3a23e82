import { StrictMode, useEffect } from 'react';
import { hydrateRoot } from 'react-dom/client';
import { renderToString } from 'react-dom/server';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import Pusher from 'pusher-js';
import type PusherServer from 'pusher';
import PusherWithEncryption from 'pusher-js/dist/web/pusher-with-encryption.js';
import {
  HeraldProvider,
  PusherProvider,
  useChannel,
  useChannelStatus,
  useConnectionState,
  useEvent,
  usePusher,
} from '../src';
import { APP, startHerald, type HeraldServer } from './helpers/herald';
import { clientOptions, makeClient, serverSdk } from './helpers/clients';
import { mount, sleep, waitFor, type Mounted } from './helpers/react';

let herald: HeraldServer;
let sdk: PusherServer;
const views: Mounted[] = [];
const clients: Pusher[] = [];
const sockets: WebSocket[] = [];
const NativeWebSocket = window.WebSocket;

beforeAll(async () => {
  herald = await startHerald();
  sdk = serverSdk(herald.port);
  // Count the sockets pusher-js opens (it looks window.WebSocket up on every connect).
  window.WebSocket = class CountingWebSocket extends NativeWebSocket {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols);
      sockets.push(this);
    }
  };
});

afterEach(() => {
  for (const view of views.splice(0)) view.unmount();
  for (const client of clients.splice(0)) client.disconnect();
  sockets.length = 0;
});

afterAll(async () => {
  window.WebSocket = NativeWebSocket;
  await herald?.stop();
});

const options = () => clientOptions({ heraldPort: herald.port });

/** Shows the connection state and reports the client it got. */
function Probe({ onClient, renders }: { onClient?: (client: Pusher | null) => void; renders?: string[] }) {
  const client = usePusher();
  const state = useConnectionState();
  renders?.push(`${client ? 'client' : 'no client'} ${state}`);
  useEffect(() => {
    onClient?.(client);
  }, [client, onClient]);
  return <span data-testid="state">{state}</span>;
}

describe('HeraldProvider', () => {
  it('creates its own client after mounting, once under StrictMode, and disconnects it on unmount', async () => {
    let seen: Pusher | null = null;
    const renders: string[] = [];
    const view = mount(
      <StrictMode>
        <HeraldProvider appKey={APP.key} options={options()}>
          <Probe onClient={(c) => (seen = c)} renders={renders} />
        </HeraldProvider>
      </StrictMode>,
    );
    await waitFor(() => view.text('state') === 'connected');
    // The first render has no client, as on the server; the client comes from an effect.
    expect(renders[0]).toBe('no client initialized');
    await sleep(200);
    expect(sockets).toHaveLength(1);
    expect(seen).toBeInstanceOf(Pusher);
    const client = seen as unknown as Pusher;
    expect(client.key).toBe(APP.key);

    view.unmount();
    expect(client.connection.state).toBe('disconnected');
    await waitFor(() => sockets[0].readyState === NativeWebSocket.CLOSED);
  });

  it('hydrates server-rendered markup without a mismatch, then connects', async () => {
    const tree = (
      <HeraldProvider appKey={APP.key} options={options()}>
        <Probe />
      </HeraldProvider>
    );
    const html = renderToString(tree);
    expect(html).toBe('<span data-testid="state">initialized</span>');
    expect(sockets).toHaveLength(0);

    const container = document.createElement('div');
    container.innerHTML = html;
    document.body.appendChild(container);
    const errors = vi.spyOn(console, 'error');
    const recoverable: unknown[] = [];
    const root = hydrateRoot(container, tree, { onRecoverableError: (error) => recoverable.push(error) });
    try {
      await waitFor(() => container.textContent === 'connected');
      expect(recoverable).toEqual([]);
      expect(errors).not.toHaveBeenCalled();
      expect(sockets).toHaveLength(1);
    } finally {
      errors.mockRestore();
      root.unmount();
      container.remove();
    }
  });

  it('never disconnects a client it was given', async () => {
    const client = makeClient({ heraldPort: herald.port });
    clients.push(client);
    const view = mount(
      <PusherProvider client={client}>
        <Probe />
      </PusherProvider>,
    );
    await waitFor(() => view.text('state') === 'connected');
    view.unmount();
    await sleep(100);
    expect(client.connection.state).toBe('connected');
    expect(PusherProvider).toBe(HeraldProvider);
  });

  it('uses the PusherClass it is given, e.g. the build with encryption', async () => {
    let seen: Pusher | null = null;
    const view = mount(
      <HeraldProvider appKey={APP.key} options={options()} PusherClass={PusherWithEncryption}>
        <Probe onClient={(c) => (seen = c)} />
      </HeraldProvider>,
    );
    views.push(view);
    await waitFor(() => view.text('state') === 'connected');
    expect(seen).toBeInstanceOf(PusherWithEncryption);
  });

  it('recreates the client when the app key changes, but not on a re-render with equal options', async () => {
    const seen: Array<Pusher | null> = [];
    const Tree = ({ appKey, tick }: { appKey: string; tick: number }) => (
      // A fresh options object on every render, as inline props usually are.
      <HeraldProvider appKey={appKey} options={{ ...options() }}>
        <Probe onClient={(c) => seen.push(c)} />
        <span data-testid="tick">{tick}</span>
      </HeraldProvider>
    );
    const view = mount(<Tree appKey={APP.key} tick={0} />);
    views.push(view);
    await waitFor(() => view.text('state') === 'connected');
    view.render(<Tree appKey={APP.key} tick={1} />);
    await waitFor(() => view.text('tick') === '1');
    await sleep(100);
    expect(sockets).toHaveLength(1);
    const first = seen.filter(Boolean)[0]!;

    // An unknown key: Herald refuses it (4001) and pusher-js gives up.
    view.render(<Tree appKey="no-such-key" tick={2} />);
    await waitFor(() => view.text('state') === 'failed' || view.text('state') === 'disconnected', { timeout: 10_000 });
    expect(first.connection.state).toBe('disconnected');
    expect(new Set(seen.filter(Boolean)).size).toBe(2);
  });

  it('shares reference counts between providers handed the same client', async () => {
    const client = makeClient({ heraldPort: herald.port });
    clients.push(client);
    const log: string[] = [];
    function Listener({ id }: { id: string }) {
      const channel = useChannel('shared-feed');
      useEvent(channel, 'tick', () => log.push(id));
      return <span data-testid={id}>{useChannelStatus(channel).status}</span>;
    }
    const left = mount(
      <HeraldProvider client={client}>
        <Listener id="left" />
      </HeraldProvider>,
    );
    const right = mount(
      <HeraldProvider client={client}>
        <Listener id="right" />
      </HeraldProvider>,
    );
    views.push(right);
    await waitFor(() => left.text('left') === 'subscribed' && right.text('right') === 'subscribed');
    left.unmount();
    await sleep(150);
    await sdk.trigger('shared-feed', 'tick', {});
    await waitFor(() => log.length === 1);
    expect(log).toEqual(['right']);
  });

  it('explains a hook used outside any provider', () => {
    const errors: unknown[] = [];
    function Outside() {
      try {
        usePusher();
      } catch (error) {
        errors.push(error);
      }
      return null;
    }
    const view = mount(<Outside />);
    views.push(view);
    return waitFor(() => errors.length > 0).then(() => {
      expect(String(errors[0])).toMatch(/usePusher\(\) must be used inside <HeraldProvider>/);
    });
  });
});
