import { useEffect, useMemo, useState, type ReactNode } from 'react';
import type Pusher from 'pusher-js';
import type { Options } from 'pusher-js';
import { HeraldContext, type HeraldContextValue } from './context';
import { ChannelRegistry } from './registry';
import { UserStore } from './user-store';
import { useLatest } from './internal';

/** A pusher-js constructor: `Pusher` from 'pusher-js' or 'pusher-js/with-encryption'. */
export type PusherConstructor = new (appKey: string, options: Options) => Pusher;

interface CommonProps {
  children?: ReactNode;
  /**
   * Milliseconds to wait after the last hook releases a channel before it is
   * really unsubscribed. 0 (the default) still waits for the next macrotask,
   * which is what makes StrictMode's mount/unmount/mount harmless. A larger
   * value avoids an unsubscribe/subscribe round trip when one screen replaces
   * another that uses the same channel.
   */
  releaseDelay?: number;
}

export interface ProviderWithClientProps extends CommonProps {
  /** A pusher-js instance you created and own; the provider never disconnects it. */
  client: Pusher;
  appKey?: undefined;
  options?: undefined;
  PusherClass?: undefined;
}

export interface ProviderWithOptionsProps extends CommonProps {
  client?: undefined;
  /** The app key; the provider creates the client in the browser after mounting. */
  appKey: string;
  /** pusher-js options, for Herald usually wsHost/wsPort/forceTLS/enabledTransports. */
  options: Options;
  /**
   * The pusher-js class to instantiate. Defaults to a lazy `import('pusher-js')`
   * done in an effect; pass `Pusher` from 'pusher-js/with-encryption' for
   * encrypted channels.
   */
  PusherClass?: PusherConstructor;
}

export type HeraldProviderProps = ProviderWithClientProps | ProviderWithOptionsProps;

function pickConstructor(mod: unknown): PusherConstructor {
  // ESM, CJS-through-ESM and UMD builds nest the class differently.
  let candidate: unknown = mod;
  for (let i = 0; i < 3 && typeof candidate !== 'function'; i += 1) {
    candidate = (candidate as { default?: unknown } | null)?.default;
  }
  if (typeof candidate !== 'function') {
    throw new Error("HeraldProvider: could not find the Pusher class in 'pusher-js'.");
  }
  return candidate as PusherConstructor;
}

// One registry and one user store per pusher-js client, shared by every
// provider that is handed the same client, so that two providers can never
// unsubscribe each other's channels.
const registries = new WeakMap<Pusher, ChannelRegistry>();
const userStores = new WeakMap<Pusher, UserStore>();

function registryFor(client: Pusher): ChannelRegistry {
  let registry = registries.get(client);
  if (!registry) {
    registry = new ChannelRegistry(client);
    registries.set(client, registry);
  }
  return registry;
}

// Created on first use so apps without user authentication pay nothing.
function userStoreFor(client: Pusher): UserStore {
  let store = userStores.get(client);
  if (!store) {
    store = new UserStore(client);
    userStores.set(client, store);
  }
  return store;
}

/** A stable key for options: functions are ignored, the latest ones are always used. */
function optionsKey(options: Options | undefined): string {
  if (!options) return '';
  try {
    return JSON.stringify(options);
  } catch {
    // Not serializable (a cycle): only a new appKey recreates the client.
    return '\u0000unserializable';
  }
}

/**
 * Makes a pusher-js client available to the Herald hooks below it.
 *
 * Either pass `client` (you own it), or `appKey` + `options` and the provider
 * creates the client itself, only in the browser, after mounting, and
 * disconnects it when it unmounts or the key/options change. Nothing here
 * touches `window` or opens a socket during rendering, so server rendering is
 * safe.
 */
export function HeraldProvider(props: HeraldProviderProps): ReactNode {
  const { client: givenClient, appKey, options, PusherClass, releaseDelay = 0, children } = props;
  const [ownedClient, setOwnedClient] = useState<Pusher | null>(null);

  const latest = useLatest({ options, PusherClass });
  const key = optionsKey(options);

  useEffect(() => {
    if (givenClient || appKey === undefined) return undefined;
    if (typeof window === 'undefined') return undefined;

    let cancelled = false;
    let created: Pusher | null = null;
    const create = (Ctor: PusherConstructor): void => {
      if (cancelled) return;
      created = new Ctor(appKey, latest.current.options as Options);
      setOwnedClient(created);
    };
    const Ctor = latest.current.PusherClass;
    // Creation always waits for a microtask: StrictMode's immediate
    // unmount/remount cancels the first attempt instead of opening a second socket.
    const ready: Promise<PusherConstructor> = Ctor
      ? Promise.resolve(Ctor)
      : import('pusher-js').then(pickConstructor);
    ready.then(create, (error: unknown) => {
      if (!cancelled) console.error('HeraldProvider: could not load pusher-js', error);
    });

    return () => {
      cancelled = true;
      if (created) {
        created.disconnect();
        created = null;
      }
      setOwnedClient(null);
    };
  }, [givenClient, appKey, key, latest]);

  const client = givenClient ?? ownedClient;
  const value = useMemo<HeraldContextValue>(() => {
    if (!client) return { client: null, registry: null, userStore: () => null };
    return { client, registry: registryFor(client), userStore: () => userStoreFor(client) };
  }, [client]);
  useEffect(() => {
    if (value.registry) value.registry.releaseDelay = releaseDelay;
  }, [value, releaseDelay]);

  return <HeraldContext.Provider value={value}>{children}</HeraldContext.Provider>;
}

/** Alias of {@link HeraldProvider} for code written against other Pusher bindings. */
export const PusherProvider = HeraldProvider;
