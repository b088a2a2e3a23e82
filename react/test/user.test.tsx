import { StrictMode } from 'react';
import { describe, expect, it } from 'vitest';
import type Pusher from 'pusher-js';
import { HeraldProvider, useUser, useUserEvent } from '../src';
import { type ClientOptions } from './helpers/clients';
import { liveSuite } from './helpers/suite';
import { mount, sleep, waitFor } from './helpers/react';

const live = liveSuite();

function user(userId: string, extra: Partial<ClientOptions> = {}): Pusher {
  return live.user(userId, extra);
}

function Me({ watch }: { watch?: string[] }) {
  const { user, signedIn, isOnline, error } = useUser();
  const text = signedIn
    ? `in as ${user!.id}; online: ${(watch ?? []).filter(isOnline).join(',') || '-'}`
    : error
      ? `error ${JSON.stringify(error)}`
      : 'out';
  return <span data-testid="me">{text}</span>;
}

describe('useUser', () => {
  it('asks pusher-js to sign in once, even under StrictMode and from several components', async () => {
    const alice = user('alice');
    const view = mount(
      <StrictMode>
        <HeraldProvider client={alice}>
          <Me />
          <Me />
        </HeraldProvider>
      </StrictMode>,
    );
    live.views.push(view);
    await waitFor(() => live.wire.count('pusher:signin') === 1);
    await waitFor(() => view.container.textContent === 'in as alice; online: -'.repeat(2));
    await sleep(200);
    expect(live.auth.calls['/pusher/user-auth']).toHaveLength(1);
    expect(live.auth.calls['/pusher/user-auth']![0].socket_id).toBe(alice.connection.socket_id);
    const frame = live.wire.frames.find((f) => f.event === 'pusher:signin')!;
    const data = frame.data as { auth: string; user_data: string };
    expect(data.auth).toMatch(/^key-1:[0-9a-f]{64}$/);
    expect(JSON.parse(data.user_data)).toMatchObject({ id: 'alice' });
    expect(live.wire.count('pusher:signin')).toBe(1);
  });

  it('reports a failing user-auth endpoint as an error', async () => {
    const alice = user('alice', { userAuthPath: '/pusher/missing' });
    const view = mount(
      <HeraldProvider client={alice}>
        <Me />
      </HeraldProvider>,
    );
    live.views.push(view);
    await waitFor(() => view.text('me')?.startsWith('error'));
    expect(view.text('me')).toContain('"status":404');
    expect(live.wire.count('pusher:signin')).toBe(0);
  });

  it('does not sign in when asked not to', async () => {
    const alice = user('alice');
    function Passive() {
      const { signedIn } = useUser({ signin: false });
      return <span data-testid="passive">{String(signedIn)}</span>;
    }
    const view = mount(
      <HeraldProvider client={alice}>
        <Passive />
      </HeraldProvider>,
    );
    live.views.push(view);
    await waitFor(() => alice.connection.state === 'connected');
    await sleep(200);
    expect(view.text('passive')).toBe('false');
    expect(live.auth.calls['/pusher/user-auth'] ?? []).toHaveLength(0);
  });

  it('signs in, receives user events and follows the watchlist', async () => {
    // Carol is online before Alice signs in; Bob comes and goes afterwards.
    const carol = user('carol');
    const carolView = mount(
      <HeraldProvider client={carol}>
        <Me />
      </HeraldProvider>,
    );
    live.views.push(carolView);
    await waitFor(() => carolView.text('me') === 'in as carol; online: -');

    const alice = user('alice', { watchlist: ['bob', 'carol'] });
    const notes: unknown[] = [];
    function Inbox() {
      useUserEvent<{ text: string }>('note', (data) => notes.push(data));
      return null;
    }
    const Page = ({ late }: { late: boolean }) => (
      <StrictMode>
        <HeraldProvider client={alice}>
          <Me watch={['bob', 'carol']} />
          <Inbox />
          {late && (
            <span data-testid="late">
              <Me watch={['bob', 'carol']} />
            </span>
          )}
        </HeraldProvider>
      </StrictMode>
    );
    const aliceView = mount(<Page late={false} />);
    live.views.push(aliceView);
    await waitFor(() => aliceView.text('me') === 'in as alice; online: carol');
    expect(live.wire.count('pusher:signin')).toBe(2);

    await live.sdk.sendToUser('alice', 'note', { text: 'hello' });
    await waitFor(() => notes.length === 1);
    await sleep(100);
    expect(notes).toEqual([{ text: 'hello' }]);

    const bob = user('bob');
    const bobView = mount(
      <HeraldProvider client={bob}>
        <Me />
      </HeraldProvider>,
    );
    live.views.push(bobView);
    await waitFor(() => bobView.text('me')?.startsWith('in as bob'));
    await waitFor(() => aliceView.text('me') === 'in as alice; online: bob,carol');

    // A component mounting now still knows who is online (the events came before it).
    aliceView.render(<Page late />);
    await waitFor(() => aliceView.text('late') === 'in as alice; online: bob,carol');

    bob.disconnect();
    await waitFor(() => aliceView.text('me') === 'in as alice; online: carol');
    expect(aliceView.text('late')).toBe('in as alice; online: carol');
  });
});
