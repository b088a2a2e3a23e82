import type Pusher from 'pusher-js';
import type { Channel } from 'pusher-js';
import { recoveryFor, type HeraldRecovery, type RecoveredChannel } from 'herald-channels-recovery';

interface Entry {
  channel: Channel;
  users: number;
  releaseTimer: ReturnType<typeof setTimeout> | undefined;
  onError: () => void;
}

/**
 * Reference-counted channel subscriptions for one pusher-js client.
 *
 * Every hook that needs a channel calls `acquire` when it mounts and
 * `release` when it unmounts. The channel is subscribed on the first
 * acquire and unsubscribed only after the last holder released it.
 *
 * While a channel is held, the client's herald-channels-recovery helper follows it
 * from its subscription on, so the hooks that bind through the helper get
 * every event once and in order across reconnections (on Herald, for channels
 * with history).
 *
 * The real unsubscribe is deferred by `releaseDelay` milliseconds (a
 * macrotask even when the delay is 0). React StrictMode mounts, unmounts and
 * mounts again within one commit, so the second acquire arrives before the
 * timer fires and simply cancels it: the channel is subscribed once and never
 * dropped.
 */
export class ChannelRegistry {
  private readonly entries = new Map<string, Entry>();

  readonly recovery: HeraldRecovery;

  constructor(
    readonly client: Pusher,
    public releaseDelay: number = 0,
  ) {
    this.recovery = recoveryFor(client);
  }

  /** The helper's view of a channel: null for channels it can't follow (encrypted ones). */
  recovered(name: string): RecoveredChannel | null {
    return followable(name) ? this.recovery.channel(name) : null;
  }

  acquire(name: string): Channel {
    const existing = this.entries.get(name);
    if (existing) {
      existing.users += 1;
      if (existing.releaseTimer !== undefined) {
        clearTimeout(existing.releaseTimer);
        existing.releaseTimer = undefined;
      }
      return existing.channel;
    }
    // Followed before subscribing, so the helper sees the subscription's start position.
    this.recovered(name);
    const channel = this.client.subscribe(name);
    // A server that refuses a subscription answers pusher:subscription_error
    // (Herald, soketi). pusher-js then leaves the channel "pending" for good:
    // unsubscribing only marks it cancelled and subscribing again only
    // un-cancels it, so it would never be retried. Clear the flag, as pusher-js
    // itself does when the auth endpoint fails, so that the last release drops
    // the channel and the next acquire really subscribes again.
    const onError = (): void => {
      channel.subscriptionPending = false;
    };
    channel.bind('pusher:subscription_error', onError);
    this.entries.set(name, { channel, users: 1, releaseTimer: undefined, onError });
    return channel;
  }

  release(name: string): void {
    const entry = this.entries.get(name);
    if (!entry || entry.users === 0) return;
    entry.users -= 1;
    if (entry.users > 0 || entry.releaseTimer !== undefined) return;
    entry.releaseTimer = setTimeout(() => {
      entry.releaseTimer = undefined;
      if (entry.users === 0 && this.entries.get(name) === entry) {
        this.entries.delete(name);
        entry.channel.unbind('pusher:subscription_error', entry.onError);
        this.recovery.forget(name);
        this.client.unsubscribe(name);
      }
    }, this.releaseDelay);
  }

  /** Number of mounted hooks currently holding `name` (0 when not held). */
  holders(name: string): number {
    return this.entries.get(name)?.users ?? 0;
  }
}

function followable(name: string): boolean {
  return !name.startsWith('private-encrypted-');
}
