import { StrictMode } from 'react';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type Pusher from 'pusher-js';
import type PusherServer from 'pusher';
import { HeraldProvider, useUser, useUserEvent } from '../src';
import { startHerald, type HeraldServer } from './helpers/herald';
import { startAuthServer, type AuthServer } from './helpers/auth';
import { makeClient, recordSentFrames, serverSdk, type ClientOptions } from './helpers/clients';
import { mount, sleep, waitFor, type Mounted } from './helpers/react';

let herald: HeraldServer;
let auth: AuthServer;
let sdk: PusherServer;
let wire: ReturnType<typeof recordSentFrames>;
const clients: Pusher[] = [];
const views: Mounted[] = [];
/** Whether this Herald answers pusher:signin at all (user authentication is a later milestone). */
let signinSupported = false;
let signinProbe = '';

function user(userId: string, extra: Partial<ClientOptions> = {}): Pusher {
  const client = makeClient({ heraldPort: herald.port, authUrl: auth.url, userId, userName: userId, ...extra });
  clients.push(client);
  return client;
}

/**
 * Signs a bare pusher-js client in and looks at the answer. Only the explicit
 * "not enabled" refusal counts as unsupported: any other outcome runs the
 * sign-in tests, so a broken implementation fails them instead of skipping.
 */
async function probeSignin(): Promise<void> {
  const probe = user('probe');
  let refusal = '';
  probe.connection.bind('error', (error: { data?: { message?: string } }) => {
    refusal = error?.data?.message ?? '';
  });
  probe.signin();
  await waitFor(() => probe.user.user_data !== null || refusal !== '', { timeout: 5000 }).catch(() => undefined);
  signinProbe = probe.user.user_data ? 'signed in' : refusal || 'no answer';
  signinSupported = !/not enabled/i.test(refusal);
  probe.disconnect();
}

beforeAll(async () => {
  [herald, auth] = await Promise.all([startHerald(), startAuthServer()]);
  sdk = serverSdk(herald.port);
  wire = recordSentFrames();
  await probeSignin();
  wire.frames.length = 0;
  delete auth.calls['/pusher/user-auth'];
});

afterEach(() => {
  for (const view of views.splice(0)) view.unmount();
  for (const client of clients.splice(0)) client.disconnect();
  wire.frames.length = 0;
  for (const path of Object.keys(auth.calls)) delete auth.calls[path];
});

afterAll(async () => {
  wire.restore();
  await Promise.all([herald?.stop(), auth?.close()]);
});

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
    views.push(view);
    await waitFor(() => wire.count('pusher:signin') === 1);
    await sleep(300);
    expect(auth.calls['/pusher/user-auth']).toHaveLength(1);
    expect(auth.calls['/pusher/user-auth']![0].socket_id).toBe(alice.connection.socket_id);
    const frame = wire.frames.find((f) => f.event === 'pusher:signin')!;
    const data = frame.data as { auth: string; user_data: string };
    expect(data.auth).toMatch(/^key-1:[0-9a-f]{64}$/);
    expect(JSON.parse(data.user_data)).toMatchObject({ id: 'alice' });
    expect(wire.count('pusher:signin')).toBe(1);
  });

  it('reports a failing user-auth endpoint as an error', async () => {
    const alice = user('alice', { userAuthPath: '/pusher/missing' });
    const view = mount(
      <HeraldProvider client={alice}>
        <Me />
      </HeraldProvider>,
    );
    views.push(view);
    await waitFor(() => view.text('me')?.startsWith('error'));
    expect(view.text('me')).toContain('"status":404');
    expect(wire.count('pusher:signin')).toBe(0);
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
    views.push(view);
    await waitFor(() => alice.connection.state === 'connected');
    await sleep(200);
    expect(view.text('passive')).toBe('false');
    expect(auth.calls['/pusher/user-auth'] ?? []).toHaveLength(0);
  });

  // Needs pusher:signin on the server (a later issue); runs by itself once Herald answers it.
  it('is signed in, receives user events and follows the watchlist', async (context) => {
    context.skip(!signinSupported, `Herald refused pusher:signin: ${signinProbe}`);
    const alice = user('alice', { watchlist: ['bob', 'carol'] });
    const notes: unknown[] = [];
    function Inbox() {
      useUserEvent<{ text: string }>('note', (data) => notes.push(data));
      return null;
    }
    const aliceView = mount(
      <HeraldProvider client={alice}>
        <Me watch={['bob', 'carol']} />
        <Inbox />
      </HeraldProvider>,
    );
    views.push(aliceView);
    await waitFor(() => aliceView.text('me') === 'in as alice; online: -');

    await sdk.sendToUser('alice', 'note', { text: 'hello' });
    await waitFor(() => notes.length === 1);
    expect(notes).toEqual([{ text: 'hello' }]);

    const bob = user('bob');
    const bobView = mount(
      <HeraldProvider client={bob}>
        <Me />
      </HeraldProvider>,
    );
    views.push(bobView);
    await waitFor(() => bobView.text('me')?.startsWith('in as bob'));
    await waitFor(() => aliceView.text('me') === 'in as alice; online: bob');

    bob.disconnect();
    await waitFor(() => aliceView.text('me') === 'in as alice; online: -');
  });
});

describe('signin probe', () => {
  it('records what the server answered to pusher:signin', () => {
    // Printed so CI logs show why the signed-in test ran or was skipped.
    console.info(`pusher:signin probe: ${signinProbe} (signed-in tests ${signinSupported ? 'run' : 'skipped'})`);
    expect(signinProbe).not.toBe('');
  });
});
