import { RecoveredChannel, type ChannelHost, type EventMetadata, type RecoverAnswer } from './channel';
import { tapFrames, type PusherLike, type Tap } from './tap';

/** Herald's protocol extension (its docs/history.md). */
export const RECOVER_EVENT = 'herald:recover';
export const RECOVERED_EVENT = 'pusher_internal:herald_recovered';
export const SKIPPED_EVENT = 'pusher_internal:herald_skipped';
const SUBSCRIPTION_SUCCEEDED = 'pusher_internal:subscription_succeeded';

/** Earlier socket ids sent with a recovery: Herald leaves out events triggered with them excluded. */
const EARLIER_SOCKETS = 8;

export interface RecoveryOptions {
  /** Milliseconds to wait for Herald's answer before giving up on a recovery (default 10 000). */
  timeoutMs?: number;
  /** Events held back behind a gap, per channel, before giving up on recovering it (default 50 000). */
  maxBuffered?: number;
  /** Where the warning goes when recovery can't work with this pusher-js (default console.warn). */
  warn?: (message: string) => void;
}

export interface ChannelOptions {
  /** A position to recover from on the first subscription, e.g. the `position` of Herald's HTTP
   * history endpoint for the events the app already loaded. */
  since?: string | null;
}

interface Frame {
  event?: unknown;
  channel?: unknown;
  data?: unknown;
  user_id?: unknown;
  position?: unknown;
}

/** pusher-js's rule for `data`: a string is parsed as JSON when it is JSON. */
function decodeData(data: unknown): unknown {
  if (typeof data !== 'string') return data;
  try {
    return JSON.parse(data);
  } catch {
    return data;
  }
}

const instances = new WeakMap<object, HeraldRecovery>();

/** The helper of a pusher-js client (one per client, created on first use). */
export function recoveryFor(pusher: PusherLike, options: RecoveryOptions = {}): HeraldRecovery {
  let recovery = instances.get(pusher);
  if (!recovery) {
    recovery = new HeraldRecovery(pusher, options);
    instances.set(pusher, recovery);
  }
  return recovery;
}

/**
 * Recovery for one pusher-js client (also the one inside laravel-echo: `echo.connector.pusher`).
 *
 * Channels taken through it deliver each event to the callbacks bound through it once and in order,
 * and after every reconnection they ask Herald for what was published meanwhile. The client itself
 * is used as it is: subscriptions, authorization and reconnection stay pusher-js's.
 */
export class HeraldRecovery {
  /** false when this pusher-js can't be read (see `reason`): events still arrive, nothing is recovered. */
  supported = true;
  reason: string | null = null;
  private readonly channels = new Map<string, RecoveredChannel>();
  private readonly socketIds: string[] = [];
  private readonly tap: Tap | null;
  private readonly host: ChannelHost;
  private readonly warn: (message: string) => void;
  private destroyed = false;

  constructor(
    readonly pusher: PusherLike,
    options: RecoveryOptions = {},
  ) {
    this.warn = options.warn ?? ((message) => console.warn(message));
    const recovery = this;
    this.host = {
      get positions() {
        return recovery.supported;
      },
      timeoutMs: options.timeoutMs ?? 10_000,
      maxBuffered: options.maxBuffered ?? 50_000,
      requestRecovery: (channel, position) => this.requestRecovery(channel, position),
    };
    pusher.connection.bind('state_change', this.onStateChange);
    if (pusher.connection.state === 'connected' && pusher.connection.socket_id) {
      this.socketIds.push(pusher.connection.socket_id);
    }
    const tap = tapFrames(pusher, this.onFrame, (reason) => this.unsupported(reason));
    if (typeof tap === 'string') {
      this.tap = null;
      this.unsupported(tap);
    } else {
      this.tap = tap;
    }
  }

  /**
   * The channel `name` as the helper sees it (created on first use). It does not subscribe: use
   * `subscribe`, or subscribe through pusher-js or laravel-echo as usual.
   */
  channel(name: string, options: ChannelOptions = {}): RecoveredChannel {
    if (name.startsWith('private-encrypted-')) {
      throw new Error(`herald-channels-recovery: encrypted channels are not supported (${name}); bind through pusher-js.`);
    }
    let channel = this.channels.get(name);
    if (!channel) {
      channel = new RecoveredChannel(name, this.host, options.since ?? null);
      this.channels.set(name, channel);
    }
    return channel;
  }

  /** `pusher.subscribe(name)`, and the channel as the helper sees it. */
  subscribe(name: string, options: ChannelOptions = {}): RecoveredChannel {
    const channel = this.channel(name, options);
    this.pusher.subscribe(name);
    return channel;
  }

  /** `pusher.unsubscribe(name)`, and forget the channel. */
  unsubscribe(name: string): void {
    this.forget(name);
    this.pusher.unsubscribe(name);
  }

  /** Stop following `name` (its bindings and position are dropped). */
  forget(name: string): void {
    this.channels.delete(name);
  }

  /** Stop following the client altogether. */
  destroy(): void {
    this.destroyed = true;
    this.tap?.detach();
    this.pusher.connection.unbind('state_change', this.onStateChange);
    this.pusher.connection.unbind('message', this.onDecoded);
    this.channels.clear();
    instances.delete(this.pusher);
  }

  private unsupported(reason: string): void {
    if (!this.supported) return;
    this.supported = false;
    this.reason = reason;
    this.warn(`herald-channels-recovery: ${reason}; events are delivered without recovery.`);
    // Events then come from pusher-js's public message event, already decoded, without positions.
    this.pusher.connection.bind('message', this.onDecoded);
  }

  private requestRecovery(channel: string, position: string | null): boolean {
    if (this.destroyed || this.pusher.connection.state !== 'connected') return false;
    const current = this.pusher.connection.socket_id;
    const earlier = this.socketIds.filter((id) => id !== current);
    return this.pusher.send_event(RECOVER_EVENT, { position, socket_ids: earlier }, channel);
  }

  private readonly onStateChange = (change: { previous?: string; current?: string }): void => {
    if (change?.current === 'connected') {
      const id = this.pusher.connection.socket_id;
      if (id && !this.socketIds.includes(id)) {
        this.socketIds.push(id);
        if (this.socketIds.length > EARLIER_SOCKETS + 1) this.socketIds.shift();
      }
    } else if (change?.previous === 'connected') {
      for (const channel of this.channels.values()) channel.disconnected();
    }
  };

  private readonly onFrame = (raw: string): void => {
    // Only frames of followed channels matter; skip the parse for the rest when it is cheap to tell.
    let frame: Frame;
    try {
      frame = JSON.parse(raw) as Frame;
    } catch {
      return;
    }
    this.dispatch(frame, false);
  };

  private readonly onDecoded = (event: Frame): void => {
    this.dispatch(event, true);
  };

  private dispatch(frame: Frame, decoded: boolean): void {
    if (frame === null || typeof frame !== 'object' || typeof frame.channel !== 'string') return;
    const channel = this.channels.get(frame.channel);
    const name = frame.event;
    if (!channel || typeof name !== 'string') return;
    if (name === SUBSCRIPTION_SUCCEEDED) {
      // Herald sends `position` on channels with history (null when it could not read it).
      channel.subscribed(frame.position, 'position' in frame);
    } else if (name === RECOVERED_EVENT) {
      const answer = decoded ? frame.data : decodeData(frame.data);
      if (answer && typeof answer === 'object') channel.answered(answer as RecoverAnswer);
    } else if (name === SKIPPED_EVENT) {
      channel.skipped(frame.position);
    } else if (!name.startsWith('pusher_internal:')) {
      const metadata: EventMetadata = {};
      // As pusher-js does: any truthy user_id, kept as sent.
      if (frame.user_id) metadata.user_id = frame.user_id as string;
      channel.event(name, decoded ? frame.data : decodeData(frame.data), metadata, frame.position);
    }
  }
}
