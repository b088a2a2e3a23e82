import { useCallback } from 'react';
import type { Channel } from 'pusher-js';
import { useChannel } from './useChannel';
import { channelKind } from './internal';

/** Thrown when a client event cannot be sent on the given channel or under the given name. */
export class ClientEventError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClientEventError';
  }
}

/**
 * Sends a client event. Returns true when it was handed to the socket, false
 * when there is no channel yet or it is not subscribed (or the connection is
 * down): nothing is sent then, because the server would reject it.
 */
export type ClientTrigger = <T = unknown>(eventName: string, data: T) => boolean;

/**
 * Returns a function that sends client events (`client-*`) on `channel`.
 *
 * Client events only exist on private- and presence- channels, and only if the
 * app enables them on the server. Calling the function for a public,
 * private-encrypted- or internal channel, or with an event name that does not
 * start with `client-`, throws a ClientEventError instead of sending something
 * the server would refuse. The server never echoes the event to its sender.
 *
 * `channel` is a Channel from useChannel/usePresenceChannel or a channel name
 * (the hook then subscribes to it itself).
 */
export function useClientTrigger(channel: Channel | string | null | undefined): ClientTrigger {
  const owned = useChannel(typeof channel === 'string' ? channel : null);
  const target = typeof channel === 'string' ? owned : (channel ?? null);
  const name = typeof channel === 'string' ? channel : (channel?.name ?? null);

  return useCallback<ClientTrigger>(
    (eventName, data) => {
      if (typeof eventName !== 'string' || !eventName.startsWith('client-')) {
        throw new ClientEventError(`Client event names must start with "client-" (got "${String(eventName)}").`);
      }
      // No channel yet (useChannel still subscribing, or null passed): nothing to send on.
      if (!name) return false;
      const kind = channelKind(name);
      if (kind !== 'private' && kind !== 'presence') {
        const why =
          kind === 'private-encrypted'
            ? 'pusher-js cannot send client events on encrypted channels'
            : `"${name}" is ${kind === 'public' ? 'a public' : 'an internal'} channel`;
        throw new ClientEventError(`Client events can only be sent on private- and presence- channels: ${why}.`);
      }
      if (!target || !target.subscribed) return false;
      return target.trigger(eventName, data);
    },
    [name, target],
  );
}
