import { StrictMode } from 'react';
import { describe, expect, it } from 'vitest';
import type Pusher from 'pusher-js';
import { HeraldProvider, usePresenceChannel } from '../src';
import { channelInfo } from './helpers/clients';
import { liveSuite } from './helpers/suite';
import { mount, sleep, waitFor, type Mounted } from './helpers/react';

const live = liveSuite();

function user(userId: string, userName: string): Pusher {
  return live.user(userId, { userName });
}

/** Renders the roster as "count|me|id:name,id:name" (ids sorted). */
function Roster({ channel, testId }: { channel: string | null; testId: string }) {
  const { members, me, count, subscribed } = usePresenceChannel<{ name: string }>(channel);
  const list = [...members.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([id, info]) => `${id}:${info.name}`)
    .join(',');
  return <span data-testid={testId}>{subscribed ? `${count}|${me?.id ?? '-'}|${list}` : 'not subscribed'}</span>;
}

function show(client: Pusher, node: React.ReactNode, strict = false): Mounted {
  const tree = <HeraldProvider client={client}>{node}</HeraldProvider>;
  const view = mount(strict ? <StrictMode>{tree}</StrictMode> : tree);
  live.views.push(view);
  return view;
}

describe('usePresenceChannel', () => {
  it('follows members joining and leaving, as two pusher-js clients see it', async () => {
    const alice = user('alice', 'Alice');
    const bob = user('bob', 'Bob');

    const aliceView = show(alice, <Roster channel="presence-lobby" testId="roster" />, true);
    await waitFor(() => aliceView.text('roster') === '1|alice|alice:Alice');

    const bobView = show(bob, <Roster channel="presence-lobby" testId="roster" />);
    await waitFor(() => bobView.text('roster') === '2|bob|alice:Alice,bob:Bob');
    // Alice learns about Bob from pusher:member_added.
    await waitFor(() => aliceView.text('roster') === '2|alice|alice:Alice,bob:Bob');
    expect(await channelInfo(live.sdk, 'presence-lobby')).toMatchObject({ user_count: 2, subscription_count: 2 });

    // Bob's component unmounts: the hook leaves the channel, Alice gets pusher:member_removed.
    bobView.render(
      <HeraldProvider client={bob}>
        <Roster channel={null} testId="roster" />
      </HeraldProvider>,
    );
    await waitFor(() => aliceView.text('roster') === '1|alice|alice:Alice');
    expect(bobView.text('roster')).toBe('not subscribed');
    expect(await channelInfo(live.sdk, 'presence-lobby')).toMatchObject({ user_count: 1 });
    // StrictMode on Alice's side: one subscription, and the auth endpoint was asked once per client.
    expect(live.wire.count('pusher:subscribe', 'presence-lobby')).toBe(2);
    expect(live.auth.calls['/pusher/auth']?.filter((c) => c.channel_name === 'presence-lobby')).toHaveLength(2);
  });

  it('gives a component that mounts later the full roster at once', async () => {
    const alice = user('alice', 'Alice');
    const bob = user('bob', 'Bob');
    const bobView = show(bob, <Roster channel="presence-late" testId="roster" />);
    await waitFor(() => bobView.text('roster') === '1|bob|bob:Bob');

    const Page = ({ sidebar }: { sidebar: boolean }) => (
      <HeraldProvider client={alice}>
        <Roster channel="presence-late" testId="main" />
        {sidebar && <Roster channel="presence-late" testId="sidebar" />}
      </HeraldProvider>
    );
    const aliceView = mount(<Page sidebar={false} />);
    live.views.push(aliceView);
    await waitFor(() => aliceView.text('main') === '2|alice|alice:Alice,bob:Bob');

    // The channel is already subscribed: no new subscription, no event to wait for.
    aliceView.render(<Page sidebar />);
    await waitFor(() => aliceView.text('sidebar') === '2|alice|alice:Alice,bob:Bob');
    await sleep(100);
    expect(live.wire.count('pusher:subscribe', 'presence-late')).toBe(2);

    // Removing the sidebar leaves the main roster in the channel.
    aliceView.render(<Page sidebar={false} />);
    await sleep(150);
    expect(live.wire.count('pusher:unsubscribe', 'presence-late')).toBe(0);
    expect(bobView.text('roster')).toBe('2|bob|alice:Alice,bob:Bob');
  });

  it('counts a user with two connections once', async () => {
    const tab1 = user('carol', 'Carol');
    const tab2 = user('carol', 'Carol');
    const dave = user('dave', 'Dave');
    const daveView = show(dave, <Roster channel="presence-tabs" testId="roster" />);
    await waitFor(() => daveView.text('roster') === '1|dave|dave:Dave');
    const tab1View = show(tab1, <Roster channel="presence-tabs" testId="roster" />);
    await waitFor(() => daveView.text('roster') === '2|dave|carol:Carol,dave:Dave');
    const tab2View = show(tab2, <Roster channel="presence-tabs" testId="roster" />);
    await waitFor(() => tab2View.text('roster') === '2|carol|carol:Carol,dave:Dave');
    // Closing one of Carol's tabs does not make her leave.
    tab1View.unmount();
    live.views.splice(live.views.indexOf(tab1View), 1);
    await sleep(300);
    expect(daveView.text('roster')).toBe('2|dave|carol:Carol,dave:Dave');
    tab2View.unmount();
    live.views.splice(live.views.indexOf(tab2View), 1);
    await waitFor(() => daveView.text('roster') === '1|dave|dave:Dave');
  });

  it('refuses a channel name that is not a presence channel', () => {
    const alice = user('alice', 'Alice');
    const errors: unknown[] = [];
    function Catch() {
      try {
        usePresenceChannel('private-room');
      } catch (error) {
        errors.push(error);
      }
      return null;
    }
    const view = show(alice, <Catch />);
    return waitFor(() => errors.length > 0).then(() => {
      expect(String(errors[0])).toMatch(/presence-/);
      view.unmount();
      live.views.splice(live.views.indexOf(view), 1);
    });
  });
});
