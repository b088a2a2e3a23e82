import { useEffect } from 'react';
import type { Channel } from 'pusher-js';
import { useChannel } from './useChannel';
import { useLatest } from './internal';

/** Extra information pusher-js passes with an event. */
export interface EventMetadata {
  /** Sender's user id, set by the server on client events in presence channels. */
  user_id?: string;
}

export type EventCallback<T> = (data: T, metadata: EventMetadata) => void;

/**
 * Calls `callback` for every `eventName` event on `channel`.
 *
 * `channel` is a Channel from useChannel (or any pusher-js Channel), or a
 * channel name, in which case the hook subscribes to it itself (reference
 * counted like useChannel). The binding is made once per channel and event
 * name; the latest `callback` is always the one called, so passing an inline
 * function neither rebinds nor resubscribes.
 */
export function useEvent<T = unknown>(
  channel: Channel | string | null | undefined,
  eventName: string | null | undefined,
  callback: EventCallback<T>,
): void {
  const owned = useChannel(typeof channel === 'string' ? channel : null);
  const target = typeof channel === 'string' ? owned : (channel ?? null);
  const latest = useLatest(callback);

  useEffect(() => {
    if (!target || !eventName) return undefined;
    const handler = (data: T, metadata?: EventMetadata): void => {
      latest.current(data, metadata ?? {});
    };
    target.bind(eventName, handler);
    return () => {
      target.unbind(eventName, handler);
    };
  }, [target, eventName, latest]);
}
