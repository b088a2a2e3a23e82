/**
 * The one place that reads pusher-js internals.
 *
 * pusher-js keeps only `event`, `channel`, `data` and `user_id` of each frame it decodes, so the
 * `position` Herald adds to events is invisible through its public API. This module listens to the
 * raw frames of the current transport, the object pusher-js itself reads them from
 * (`pusher.connection.connection.transport`, a pusher-js event dispatcher emitting each WebSocket
 * `message`), reattaching after every reconnection. Nothing is patched or replaced: it is one more
 * listener, called after pusher-js has handled the same frame.
 *
 * Checked against pusher-js 7.x and 8.x (the test suite runs both). On any other major version, or if
 * the objects are not where they are expected, it attaches nothing and says why: the caller then runs
 * without recovery.
 */

/** The pusher-js versions whose internals this module was checked against. */
export const KNOWN_PUSHER_VERSIONS = /^[78]\./;

/** What of a pusher-js client this package uses (pusher-js 7 and 8 instances have all of it). */
export interface PusherLike {
  connection: {
    state: string;
    socket_id?: string;
    bind(event: string, callback: (...args: any[]) => void): unknown;
    unbind(event?: string, callback?: (...args: any[]) => void): unknown;
  };
  send_event(event: string, data: unknown, channel?: string): boolean;
  subscribe(name: string): unknown;
  unsubscribe(name: string): void;
}

interface Dispatcher {
  bind(event: string, callback: (...args: any[]) => void): unknown;
  unbind(event?: string, callback?: (...args: any[]) => void): unknown;
}

export type FrameListener = (raw: string) => void;

export interface Tap {
  /** Stop listening. */
  detach(): void;
}

/** The pusher-js version of a client, if it says: pusher-js keeps it in the options of its timeline
 * (the version it reports to Pusher), the one place an instance carries it. */
export function pusherVersion(pusher: PusherLike): string | null {
  const version = (pusher as unknown as { timeline?: { options?: { version?: unknown } } }).timeline?.options?.version;
  return typeof version === 'string' ? version : null;
}

function currentTransport(pusher: PusherLike): Dispatcher | null {
  const transport = (pusher.connection as unknown as { connection?: { transport?: unknown } }).connection
    ?.transport as Partial<Dispatcher> | undefined;
  if (transport && typeof transport.bind === 'function' && typeof transport.unbind === 'function') {
    return transport as Dispatcher;
  }
  return null;
}

/**
 * Calls `listener` with the text of every frame pusher-js receives from now on, or returns the reason
 * it can't. Should a later connection not have its transport where expected, `onFailure` is told
 * once and the tap stops.
 */
export function tapFrames(pusher: PusherLike, listener: FrameListener, onFailure: (reason: string) => void): Tap | string {
  const version = pusherVersion(pusher);
  if (version === null || !KNOWN_PUSHER_VERSIONS.test(version)) {
    return `pusher-js ${version ?? '(unknown version)'} is not a version herald-channels-recovery knows (7.x, 8.x)`;
  }
  let attached: Dispatcher | null = null;
  const onMessage = (message: { data?: unknown }): void => {
    if (typeof message?.data === 'string') listener(message.data);
  };
  const attach = (): void => {
    const transport = currentTransport(pusher);
    if (transport === attached) return;
    attached?.unbind('message', onMessage);
    attached = transport;
    transport?.bind('message', onMessage);
  };
  const missing = `pusher-js ${version}: its connection has no transport where herald-channels-recovery expects it`;
  const detach = (): void => {
    pusher.connection.unbind('state_change', onState);
    attached?.unbind('message', onMessage);
    attached = null;
  };
  const onState = (change: { current?: string }): void => {
    // pusher-js sets the new connection before it reports 'connected', and the answers to the
    // subscribe requests it sends then arrive later, so nothing of the new socket is missed.
    if (change?.current !== 'connected') return;
    attach();
    if (attached === null) {
      detach();
      onFailure(missing);
    }
  };
  if (pusher.connection.state === 'connected') {
    attach();
    if (attached === null) return missing;
  }
  pusher.connection.bind('state_change', onState);
  return { detach };
}
