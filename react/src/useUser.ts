import { useCallback, useEffect, useSyncExternalStore } from 'react';
import { useHeraldContext } from './context';
import { useLatest } from './internal';
import type { HeraldUserData, UserSnapshot } from './user-store';

export interface UseUserOptions {
  /**
   * Call `pusher.signin()` when mounted (default true). Needs pusher-js's
   * `userAuthentication` option pointing at your user-auth endpoint. Sign-in is
   * idempotent in pusher-js, so many components may ask for it.
   */
  signin?: boolean;
}

export interface UserState<TUser extends HeraldUserData = HeraldUserData> {
  /** The signed-in user's `user_data` (id, user_info, watchlist), null until signed in. */
  user: TUser | null;
  signedIn: boolean;
  /** Watched user ids that are online right now. */
  online: ReadonlySet<string>;
  /** Whether a watched user id is online. */
  isOnline: (userId: string) => boolean;
  /** The `pusher:signin_error` payload from the last failed attempt. */
  error: unknown;
}

const SERVER_SNAPSHOT: UserSnapshot = { user: null, online: new Set<string>(), error: null };
const noopSubscribe = (): (() => void) => () => undefined;

/**
 * Signs the connection in (pusher-js `signin()`, protocol `pusher:signin`) and
 * follows the user's state: who we are once the server answered
 * `pusher:signin_success`, and which watchlist users are online (from
 * `pusher.user.watchlist` 'online'/'offline' events). After a reconnect
 * pusher-js signs in again by itself and the server resends the watchlist.
 */
export function useUser<TUser extends HeraldUserData = HeraldUserData>(
  options: UseUserOptions = {},
): UserState<TUser> {
  const { client, userStore } = useHeraldContext('useUser');
  const store = client ? userStore() : null;
  const wantSignin = options.signin !== false;

  useEffect(() => {
    if (client && wantSignin) client.signin();
  }, [client, wantSignin]);

  const snapshot = useSyncExternalStore(
    store ? store.subscribe : noopSubscribe,
    store ? store.getSnapshot : () => SERVER_SNAPSHOT,
    () => SERVER_SNAPSHOT,
  );
  const online = snapshot.online;
  const isOnline = useCallback((userId: string) => online.has(String(userId)), [online]);
  return {
    user: snapshot.user as TUser | null,
    signedIn: snapshot.user !== null,
    online,
    isOnline,
    error: snapshot.error,
  };
}

/**
 * Calls `callback` for events the server sends to the signed-in user
 * (published to `#server-to-user-{id}`, bound with `pusher.user.bind`). Like
 * useEvent, the latest callback is always used without rebinding. Use it
 * together with useUser(), which does the sign-in.
 */
export function useUserEvent<T = unknown>(eventName: string | null | undefined, callback: (data: T) => void): void {
  const { client } = useHeraldContext('useUserEvent');
  const latest = useLatest(callback);

  useEffect(() => {
    if (!client || !eventName) return undefined;
    const handler = (data: T): void => latest.current(data);
    client.user.bind(eventName, handler);
    return () => {
      client.user.unbind(eventName, handler);
    };
  }, [client, eventName, latest]);
}
