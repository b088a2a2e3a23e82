import { useCallback, useSyncExternalStore } from 'react';
import { usePusher } from './context';

/**
 * pusher-js connection states. 'initialized' is also what the server render
 * and the first client render show, before any socket exists.
 */
export type ConnectionState =
  | 'initialized'
  | 'connecting'
  | 'connected'
  | 'unavailable'
  | 'failed'
  | 'disconnected';

const serverSnapshot = (): ConnectionState => 'initialized';

/** The pusher-js connection state, re-rendering on every `state_change` (for a status badge). */
export function useConnectionState(): ConnectionState {
  const client = usePusher();
  const subscribe = useCallback(
    (notify: () => void) => {
      if (!client) return () => undefined;
      client.connection.bind('state_change', notify);
      return () => {
        client.connection.unbind('state_change', notify);
      };
    },
    [client],
  );
  const getSnapshot = useCallback(
    (): ConnectionState => (client ? (client.connection.state as ConnectionState) : 'initialized'),
    [client],
  );
  return useSyncExternalStore(subscribe, getSnapshot, serverSnapshot);
}
