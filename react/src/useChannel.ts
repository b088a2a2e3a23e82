import { useEffect, useState } from 'react';
import type { Channel } from 'pusher-js';
import { useHeraldContext } from './context';
import { useRecovery } from './useRecovery';

/**
 * Subscribes to `name` while the calling component is mounted and returns the
 * pusher-js Channel (null before the subscription exists, during server
 * rendering, and when `name` is null/undefined/empty).
 *
 * Subscriptions are reference-counted per pusher-js client: any number of
 * components may use the same channel, and it is unsubscribed only when the
 * last of them unmounts. StrictMode's double mount neither subscribes twice nor
 * drops the channel.
 */
export function useChannel<C extends Channel = Channel>(name: string | null | undefined): C | null {
  const { client, registry } = useHeraldContext('useChannel');
  const [channel, setChannel] = useState<Channel | null>(null);

  useEffect(() => {
    if (!registry || !name) {
      setChannel(null);
      return undefined;
    }
    setChannel(registry.acquire(name));
    return () => registry.release(name);
  }, [registry, name]);

  // Between a change of name or client and the effect above, never hand out
  // the previous channel.
  if (!channel || !name || channel.name !== name || channel.pusher !== client) return null;
  return channel as C;
}

export type ChannelStatus = 'idle' | 'pending' | 'subscribed' | 'failed';

export interface ChannelStatusResult {
  /**
   * idle: no channel; pending: waiting for the server (or for the connection);
   * subscribed: `pusher:subscription_succeeded` received; failed:
   * `pusher:subscription_error` received (auth refused, limit reached...).
   */
  status: ChannelStatus;
  /** The `pusher:subscription_error` payload when status is 'failed'. */
  error: unknown;
  /** Whether the events missed during the latest disconnection were recovered: see useRecovery. */
  recovered: boolean | null;
}

/** Subscription status of a channel returned by useChannel, for spinners and error messages. */
export function useChannelStatus(channel: Channel | null | undefined): ChannelStatusResult {
  const [result, setResult] = useState<Omit<ChannelStatusResult, 'recovered'>>({ status: 'idle', error: null });
  const { recovered } = useRecovery(channel);

  useEffect(() => {
    if (!channel) {
      setResult({ status: 'idle', error: null });
      return undefined;
    }
    let error: unknown = null;
    const read = (): void => {
      const status: ChannelStatus = channel.subscribed ? 'subscribed' : error !== null ? 'failed' : 'pending';
      setResult((previous) =>
        previous.status === status && previous.error === error ? previous : { status, error },
      );
    };
    const onSucceeded = (): void => {
      error = null;
      read();
    };
    const onError = (payload: unknown): void => {
      error = payload ?? 'subscription failed';
      read();
    };
    const connection = channel.pusher.connection;
    // pusher-js emits state_change before its own handlers reset the channels, so read afterwards.
    const readAfterStateChange = (): void => queueMicrotask(read);
    channel.bind('pusher:subscription_succeeded', onSucceeded);
    channel.bind('pusher:subscription_error', onError);
    connection.bind('state_change', readAfterStateChange);
    read();
    return () => {
      channel.unbind('pusher:subscription_succeeded', onSucceeded);
      channel.unbind('pusher:subscription_error', onError);
      connection.unbind('state_change', readAfterStateChange);
    };
  }, [channel]);

  return channel ? { ...result, recovered } : { status: 'idle', error: null, recovered: null };
}
