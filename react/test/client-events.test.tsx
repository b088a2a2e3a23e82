import { StrictMode, useEffect } from 'react';
import { describe, expect, it } from 'vitest';
import {
  ClientEventError,
  HeraldProvider,
  useChannel,
  useChannelStatus,
  useClientTrigger,
  useEvent,
  usePresenceChannel,
  type ClientTrigger,
  type EventMetadata,
} from '../src';
import { clientOptions, makeClient } from './helpers/clients';
import { APP } from './helpers/herald';
import PusherWithEncryption from 'pusher-js/dist/web/pusher-with-encryption.js';
import { liveSuite } from './helpers/suite';
import { mount, sleep, waitFor } from './helpers/react';

const live = liveSuite();
const { user } = live;

interface Typing {
  typing: boolean;
}

/** A chat participant: exposes its trigger function and logs client-typing events it receives. */
function Participant({
  channel,
  expose,
  log,
}: {
  channel: string;
  expose: (trigger: ClientTrigger) => void;
  log: Array<{ data: Typing; meta: EventMetadata }>;
}) {
  const ch = useChannel(channel);
  const { status } = useChannelStatus(ch);
  const trigger = useClientTrigger(ch);
  useEvent<Typing>(ch, 'client-typing', (data, meta) => log.push({ data, meta }));
  useEffect(() => {
    expose(trigger);
  }, [expose, trigger]);
  return <span data-testid="status">{status}</span>;
}

async function pair(channel: string) {
  const logs = { alice: [] as Array<{ data: Typing; meta: EventMetadata }>, bob: [] as Array<{ data: Typing; meta: EventMetadata }> };
  const triggers: Record<string, ClientTrigger> = {};
  for (const name of ['alice', 'bob'] as const) {
    const client = user(name);
    const view = mount(
      <StrictMode>
        <HeraldProvider client={client}>
          <Participant channel={channel} log={logs[name]} expose={(t) => (triggers[name] = t)} />
        </HeraldProvider>
      </StrictMode>,
    );
    live.views.push(view);
    await waitFor(() => view.text('status') === 'subscribed');
  }
  return { logs, triggers };
}

describe('useClientTrigger', () => {
  it('sends client events on a private channel to the other subscriber only', async () => {
    const { logs, triggers } = await pair('private-chat');
    expect(triggers.alice('client-typing', { typing: true })).toBe(true);
    await waitFor(() => logs.bob.length === 1);
    await sleep(150);
    expect(logs.bob).toEqual([{ data: { typing: true }, meta: {} }]);
    // The server does not echo a client event to its sender.
    expect(logs.alice).toEqual([]);
    expect(live.wire.count('client-typing', 'private-chat')).toBe(1);
  });

  it('tags client events on a presence channel with the sender user id', async () => {
    const { logs, triggers } = await pair('presence-chat');
    triggers.bob('client-typing', { typing: false });
    await waitFor(() => logs.alice.length === 1);
    expect(logs.alice[0]).toEqual({ data: { typing: false }, meta: { user_id: 'bob' } });
    expect(logs.bob).toEqual([]);
  });

  it('works with a channel name and with the channel from usePresenceChannel', async () => {
    const alice = user('alice');
    const bob = user('bob');
    const received: unknown[] = [];
    let send: ClientTrigger | null = null;
    function ByName() {
      const trigger = useClientTrigger('presence-room');
      const { subscribed } = usePresenceChannel('presence-room');
      useEffect(() => {
        send = trigger;
      }, [trigger]);
      return <span data-testid="by-name">{String(subscribed)}</span>;
    }
    function Receiver() {
      const { channel, count } = usePresenceChannel('presence-room');
      useEvent(channel, 'client-wave', (data) => received.push(data));
      return <span data-testid="count">{count}</span>;
    }
    const bobView = mount(
      <HeraldProvider client={bob}>
        <Receiver />
      </HeraldProvider>,
    );
    live.views.push(bobView);
    const aliceView = mount(
      <HeraldProvider client={alice}>
        <ByName />
      </HeraldProvider>,
    );
    live.views.push(aliceView);
    await waitFor(() => aliceView.text('by-name') === 'true' && bobView.text('count') === '2');
    // Both hooks share alice's one subscription.
    expect(live.wire.count('pusher:subscribe', 'presence-room')).toBe(2);
    expect(send!('client-wave', { hand: 'left' })).toBe(true);
    await waitFor(() => received.length === 1);
    expect(received).toEqual([{ hand: 'left' }]);
  });

  it('refuses public and encrypted channels, bad event names, and sends nothing unsubscribed', async () => {
    // The build with NaCl, or pusher-js refuses to create the encrypted channel at all.
    const alice = new PusherWithEncryption(APP.key, clientOptions({ heraldPort: live.herald.port, authUrl: live.auth.url }));
    live.clients.push(alice);
    const triggers: Record<string, ClientTrigger> = {};
    function Triggers() {
      triggers.public = useClientTrigger('public-room');
      triggers.encrypted = useClientTrigger('private-encrypted-room');
      triggers.none = useClientTrigger(null);
      return null;
    }
    // A private channel the server refuses (wrongly signed auth): never subscribed.
    const refusedClient = makeClient({ heraldPort: live.herald.port, authUrl: live.auth.url, authPath: '/pusher/bad-auth' });
    live.clients.push(refusedClient);
    function Refused() {
      const channel = useChannel('private-refused');
      triggers.refused = useClientTrigger(channel);
      return <span data-testid="refused">{useChannelStatus(channel).status}</span>;
    }
    const view = mount(
      <>
        <HeraldProvider client={alice}>
          <Triggers />
        </HeraldProvider>
        <HeraldProvider client={refusedClient}>
          <Refused />
        </HeraldProvider>
      </>,
    );
    live.views.push(view);
    await waitFor(() => triggers.public !== undefined);
    expect(() => triggers.public('client-x', {})).toThrow(ClientEventError);
    expect(() => triggers.public('client-x', {})).toThrow(
      /private- and presence- channels.*"public-room" is a public channel/,
    );
    expect(() => triggers.encrypted('client-x', {})).toThrow(/encrypted/);
    expect(triggers.none('client-x', {})).toBe(false);
    expect(() => triggers.public('typing', {})).toThrow(/must start with "client-"/);

    await waitFor(() => view.text('refused') === 'failed');
    expect(() => triggers.refused('typing', {})).toThrow(/must start with "client-"/);
    expect(triggers.refused('client-nope', {})).toBe(false);
    await sleep(50);
    expect(live.wire.count('client-nope')).toBe(0);
    expect(live.wire.count('client-x')).toBe(0);
  });
});
