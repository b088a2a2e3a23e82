import { createContext, useContext } from 'react';
import type Pusher from 'pusher-js';
import type { ChannelRegistry } from './registry';
import type { UserStore } from './user-store';

export interface HeraldContextValue {
  /** null until the provider has a client (always null during server rendering). */
  client: Pusher | null;
  registry: ChannelRegistry | null;
  userStore: () => UserStore | null;
}

export const HeraldContext = createContext<HeraldContextValue | null>(null);
HeraldContext.displayName = 'HeraldContext';

export function useHeraldContext(hook: string): HeraldContextValue {
  const value = useContext(HeraldContext);
  if (value === null) {
    throw new Error(`${hook}() must be used inside <HeraldProvider> (also exported as <PusherProvider>).`);
  }
  return value;
}

/**
 * The pusher-js client of the nearest <HeraldProvider>.
 *
 * Returns null while the provider is still creating its client, and always
 * during server rendering: no socket exists before the app runs in a browser.
 */
export function usePusher(): Pusher | null {
  return useHeraldContext('usePusher').client;
}
