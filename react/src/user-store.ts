import type Pusher from 'pusher-js';

/** What pusher-js keeps after `pusher:signin_success`: the parsed `user_data`. */
export interface HeraldUserData {
  id: string;
  user_info?: unknown;
  watchlist?: string[];
  [key: string]: unknown;
}

export interface UserSnapshot {
  /** The signed-in user's data, or null while not signed in. */
  user: HeraldUserData | null;
  /** Ids from the watchlist that the server currently reports online. */
  online: ReadonlySet<string>;
  /** The last sign-in failure reported by pusher-js, cleared on success. */
  error: unknown;
}

interface WatchlistEvent {
  name: string;
  user_ids: string[];
}

const EMPTY_SET: ReadonlySet<string> = new Set<string>();

/**
 * Per-client view of pusher-js's user facade.
 *
 * pusher-js does not remember watchlist events, so a component that mounts
 * after the server sent them would never learn who is online. The store starts
 * listening the first time a hook asks for it and keeps one snapshot that all
 * hooks read through useSyncExternalStore.
 */
export class UserStore {
  private snapshot: UserSnapshot = { user: null, online: EMPTY_SET, error: null };
  private readonly listeners = new Set<() => void>();

  constructor(private readonly client: Pusher) {
    const connection = client.connection;
    connection.bind('message', (event: { event: string }) => {
      // pusher-js's own user facade bound its 'message' handler in the Pusher
      // constructor, before this one, so user_data is already parsed here.
      if (event.event === 'pusher:signin_success') this.readUser(true);
    });
    connection.bind('state_change', (change: { current: string }) => {
      if (change.current !== 'connected') {
        // pusher-js forgets the user when the connection drops and signs in
        // again after reconnecting; the server then resends the watchlist.
        this.update({ user: null, online: EMPTY_SET });
      }
    });
    client.user.bind('pusher:signin_error', (error: unknown) => {
      this.update({ user: null, error });
    });
    client.user.watchlist.bind('online', (event: WatchlistEvent) => {
      const online = new Set(this.snapshot.online);
      for (const id of event.user_ids ?? []) online.add(String(id));
      this.update({ online });
    });
    client.user.watchlist.bind('offline', (event: WatchlistEvent) => {
      const online = new Set(this.snapshot.online);
      for (const id of event.user_ids ?? []) online.delete(String(id));
      this.update({ online });
    });
    this.readUser(false);
  }

  private readUser(signedInNow: boolean): void {
    const user = (this.client.user.user_data as HeraldUserData | null) ?? null;
    this.update(signedInNow && user ? { user, error: null } : { user });
  }

  private update(patch: Partial<UserSnapshot>): void {
    const next = { ...this.snapshot, ...patch };
    if (
      next.user === this.snapshot.user &&
      next.online === this.snapshot.online &&
      next.error === this.snapshot.error
    ) {
      return;
    }
    this.snapshot = next;
    for (const listener of this.listeners) listener();
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  getSnapshot = (): UserSnapshot => this.snapshot;
}
