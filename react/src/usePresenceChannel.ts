import { useEffect, useState } from 'react';
import type { PresenceChannel } from 'pusher-js';
import { useChannel } from './useChannel';
import { channelKind } from './internal';

export interface PresenceMember<TInfo> {
  id: string;
  info: TInfo;
}

export interface PresenceState<TInfo> {
  /** The pusher-js PresenceChannel (null until subscribed to), for useEvent/useClientTrigger. */
  channel: PresenceChannel | null;
  /** user id -> user_info of everyone in the channel, this connection's user included. */
  members: ReadonlyMap<string, TInfo>;
  /** This connection's own member, known once the subscription succeeded. */
  me: PresenceMember<TInfo> | null;
  /** Number of distinct users in the channel. */
  count: number;
  /** true after `pusher:subscription_succeeded`, false again while disconnected. */
  subscribed: boolean;
  /** The `pusher:subscription_error` payload if the subscription was refused. */
  error: unknown;
}

interface Snapshot<TInfo> {
  members: ReadonlyMap<string, TInfo>;
  me: PresenceMember<TInfo> | null;
  count: number;
  subscribed: boolean;
  error: unknown;
}

const EMPTY: Snapshot<unknown> = { members: new Map<string, unknown>(), me: null, count: 0, subscribed: false, error: null };

function read<TInfo>(channel: PresenceChannel, error: unknown): Snapshot<TInfo> {
  const roster = channel.members;
  const members = new Map<string, TInfo>();
  roster.each((member: PresenceMember<TInfo>) => {
    members.set(String(member.id), member.info);
  });
  const me = roster.me ? { id: String(roster.me.id), info: roster.me.info as TInfo } : null;
  return { members, me, count: roster.count, subscribed: channel.subscribed, error };
}

/**
 * Joins a presence channel and keeps its roster in React state, updated on
 * subscription success, `pusher:member_added` and `pusher:member_removed`.
 * While the connection is down pusher-js empties the roster; it is rebuilt from
 * the server's answer when pusher-js resubscribes.
 *
 * `name` must start with `presence-`; pass null to stay out of the channel.
 */
export function usePresenceChannel<TInfo = unknown>(name: string | null | undefined): PresenceState<TInfo> {
  if (name && channelKind(name) !== 'presence') {
    throw new Error(`usePresenceChannel("${name}"): presence channel names start with "presence-".`);
  }
  const channel = useChannel<PresenceChannel>(name);
  const [snapshot, setSnapshot] = useState<{ channel: PresenceChannel | null; value: Snapshot<TInfo> }>({
    channel: null,
    value: EMPTY as unknown as Snapshot<TInfo>,
  });

  useEffect(() => {
    if (!channel) return undefined;
    let error: unknown = null;
    const refresh = (): void => setSnapshot({ channel, value: read<TInfo>(channel, error) });
    const onSucceeded = (): void => {
      error = null;
      refresh();
    };
    const onError = (payload: unknown): void => {
      error = payload ?? 'subscription failed';
      refresh();
    };
    const connection = channel.pusher.connection;
    channel.bind('pusher:subscription_succeeded', onSucceeded);
    channel.bind('pusher:subscription_error', onError);
    channel.bind('pusher:member_added', refresh);
    channel.bind('pusher:member_removed', refresh);
    // pusher-js emits state_change before its own handlers empty the roster, so refresh afterwards.
    const refreshAfterStateChange = (): void => queueMicrotask(refresh);
    connection.bind('state_change', refreshAfterStateChange);
    refresh();
    return () => {
      channel.unbind('pusher:subscription_succeeded', onSucceeded);
      channel.unbind('pusher:subscription_error', onError);
      channel.unbind('pusher:member_added', refresh);
      channel.unbind('pusher:member_removed', refresh);
      connection.unbind('state_change', refreshAfterStateChange);
    };
  }, [channel]);

  const value = channel && snapshot.channel === channel ? snapshot.value : (EMPTY as unknown as Snapshot<TInfo>);
  return { channel, ...value };
}
