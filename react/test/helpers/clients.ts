import Pusher from 'pusher-js';
import PusherServer from 'pusher';
import { APP } from './herald';

export interface ClientOptions {
  heraldPort: number;
  authUrl?: string;
  /** Identity the auth endpoint puts in presence channel_data / user_data. */
  userId?: string;
  userName?: string;
  watchlist?: string[];
  unavailableTimeout?: number;
  authPath?: string;
  userAuthPath?: string;
}

/** pusher-js options for the local Herald: plain ws on loopback, no stats. */
export function clientOptions(options: ClientOptions) {
  const params: Record<string, string> = {};
  if (options.userId) params.user_id = options.userId;
  if (options.userName) params.user_name = options.userName;
  if (options.watchlist) params.watchlist = options.watchlist.join(',');
  return {
    cluster: 'herald',
    wsHost: '127.0.0.1',
    wsPort: options.heraldPort,
    forceTLS: false,
    enabledTransports: ['ws' as const],
    disableStats: true,
    ...(options.unavailableTimeout ? { unavailableTimeout: options.unavailableTimeout } : {}),
    channelAuthorization: {
      endpoint: `${options.authUrl ?? 'http://127.0.0.1:9'}${options.authPath ?? '/pusher/auth'}`,
      transport: 'ajax' as const,
      params,
    },
    userAuthentication: {
      endpoint: `${options.authUrl ?? 'http://127.0.0.1:9'}${options.userAuthPath ?? '/pusher/user-auth'}`,
      transport: 'ajax' as const,
      params,
    },
  };
}

/** A real pusher-js client (the browser build: see vitest.config.ts) connected to Herald. */
export function makeClient(options: ClientOptions): Pusher {
  return new Pusher(APP.key, clientOptions(options));
}

/** The npm `pusher` server SDK pointed at Herald's HTTP API. */
export function serverSdk(heraldPort: number): PusherServer {
  return new PusherServer({
    appId: APP.id,
    key: APP.key,
    secret: APP.secret,
    host: '127.0.0.1',
    port: String(heraldPort),
    useTLS: false,
  });
}

/** Herald's view of a channel: GET /apps/{id}/channels/{name}?info=subscription_count */
export async function channelInfo(
  sdk: PusherServer,
  channel: string,
): Promise<{ occupied: boolean; subscription_count?: number; user_count?: number }> {
  const info = channel.startsWith('presence-') ? 'subscription_count,user_count' : 'subscription_count';
  const response = await sdk.get({ path: `/channels/${encodeURIComponent(channel)}`, params: { info } });
  if (response.status !== 200) throw new Error(`GET /channels/${channel}: HTTP ${response.status}`);
  return (await response.json()) as { occupied: boolean; subscription_count?: number; user_count?: number };
}

export interface Frame {
  event: string;
  channel?: string;
  data?: unknown;
}

/**
 * Records every frame pusher-js writes to a WebSocket (jsdom's), without
 * changing what is sent: the test's window onto the wire.
 */
export function recordSentFrames(): { frames: Frame[]; restore(): void; count(event: string, channel?: string): number } {
  const frames: Frame[] = [];
  const proto = WebSocket.prototype;
  const original = proto.send;
  proto.send = function send(this: WebSocket, data: Parameters<WebSocket['send']>[0]) {
    try {
      frames.push(JSON.parse(String(data)) as Frame);
    } catch {
      frames.push({ event: '<non-json>', data });
    }
    return original.call(this, data);
  };
  const channelOf = (frame: Frame): string | undefined =>
    frame.channel ?? (frame.data as { channel?: string } | undefined)?.channel;
  return {
    frames,
    restore: () => {
      proto.send = original;
    },
    count: (event, channel) =>
      frames.filter((f) => f.event === event && (channel === undefined || channelOf(f) === channel)).length,
  };
}
