import { useEffect } from 'react';
import type { Channel } from 'pusher-js';
import { useHeraldContext } from './context';
import { useChannel } from './useChannel';
import { useLatest } from './internal';
import { useRecovery, type RecoveryState } from './useRecovery';

/** Extra information pusher-js passes with an event. */
export interface EventMetadata {
  /** Sender's user id, set by the server on client events in presence channels. */
  user_id?: string;
  /** The event's position in the channel's history (Herald, channels with history). */
  position?: string;
}

export type EventCallback<T> = (data: T, metadata: EventMetadata) => void;

/**
 * Calls `callback` for every `eventName` event on `channel`, and returns whether the events missed
 * while the connection was down were recovered (see useRecovery).
 *
 * `channel` is a Channel from useChannel (or any pusher-js Channel), or a
 * channel name, in which case the hook subscribes to it itself (reference
 * counted like useChannel). The binding is made once per channel and event
 * name; the latest `callback` is always the one called, so passing an inline
 * function neither rebinds nor resubscribes.
 *
 * Events come through herald-channels-recovery: on Herald, for channels with history,
 * each event once and in order, including those published while the client
 * was disconnected.
 */
export function useEvent<T = unknown>(
  channel: Channel | string | null | undefined,
  eventName: string | null | undefined,
  callback: EventCallback<T>,
): RecoveryState {
  const { registry } = useHeraldContext('useEvent');
  const owned = useChannel(typeof channel === 'string' ? channel : null);
  const target = typeof channel === 'string' ? owned : (channel ?? null);
  const latest = useLatest(callback);

  useEffect(() => {
    if (!target || !eventName) return undefined;
    const handler = (data: T, metadata?: EventMetadata): void => {
      latest.current(data, metadata ?? {});
    };
    const followed = registry && target.pusher === registry.client ? registry.recovered(target.name) : null;
    if (followed) {
      followed.bind(eventName, handler);
      return () => {
        followed.unbind(eventName, handler);
      };
    }
    // Encrypted channels: pusher-js decrypts, so bind there (no recovery).
    target.bind(eventName, handler);
    return () => {
      target.unbind(eventName, handler);
    };
  }, [target, eventName, latest, registry]);

  return useRecovery(target);
}
