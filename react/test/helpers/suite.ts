import { afterAll, afterEach, beforeAll } from 'vitest';
import type Pusher from 'pusher-js';
import type PusherServer from 'pusher';
import { startHerald, type HeraldServer } from './herald';
import { startAuthServer, type AuthServer } from './auth';
import { makeClient, recordSentFrames, serverSdk, type ClientOptions } from './clients';
import type { Mounted } from './react';

/** A test file's live setup: one Herald and one auth endpoint for the file, the frames pusher-js sends,
 * and the clients and views a test makes, torn down after each test. */
export interface LiveSuite {
  herald: HeraldServer;
  auth: AuthServer;
  sdk: PusherServer;
  wire: ReturnType<typeof recordSentFrames>;
  clients: Pusher[];
  views: Mounted[];
  /** A pusher-js client for a user (named after the user unless `extra.userName` says otherwise). */
  user(userId: string, extra?: Partial<ClientOptions>): Pusher;
}

/** Registers the file's hooks; call once at module level. */
export function liveSuite(): LiveSuite {
  const live = {
    clients: [] as Pusher[],
    views: [] as Mounted[],
    user(userId: string, extra: Partial<ClientOptions> = {}): Pusher {
      const client = makeClient({
        heraldPort: live.herald.port, authUrl: live.auth.url, userId, userName: userId, ...extra,
      });
      live.clients.push(client);
      return client;
    },
  } as LiveSuite;

  beforeAll(async () => {
    [live.herald, live.auth] = await Promise.all([startHerald(), startAuthServer()]);
    live.sdk = serverSdk(live.herald.port);
    live.wire = recordSentFrames();
  });

  afterEach(() => {
    for (const view of live.views.splice(0)) view.unmount();
    for (const client of live.clients.splice(0)) client.disconnect();
    live.wire.frames.length = 0;
    for (const path of Object.keys(live.auth.calls)) delete live.auth.calls[path];
  });

  afterAll(async () => {
    live.wire?.restore();
    await Promise.all([live.herald?.stop(), live.auth?.close()]);
  });

  return live;
}
