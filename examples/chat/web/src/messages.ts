import { useCallback, useEffect, useReducer, useRef } from 'react';
import { useChannel, useChannelStatus, useEvent, usePusher } from 'herald-channels-react';
import { api, newClientId, type Message } from './api';

/** Same as HISTORY_LIMIT in server/app.py: a full page means there may be more. */
const HISTORY_PAGE = 200;

/** One line of the conversation: stored (has an id) or still only on this page (optimistic). */
export interface Entry {
  clientId: string;
  userId: string;
  text: string;
  id: number | null;
  status: 'pending' | 'sent' | 'failed';
  createdAt: number;
}

type Action =
  | { type: 'stored'; messages: Message[] }
  | { type: 'pending'; entry: Entry }
  | { type: 'failed'; clientId: string }
  | { type: 'retry'; clientId: string };

function fromMessage(m: Message): Entry {
  return { clientId: m.client_id, userId: m.user_id, text: m.text, id: m.id, status: 'sent', createdAt: m.created_at * 1000 };
}

function order(entries: Entry[]): Entry[] {
  // Stored messages in the server's order, then what this page is still sending, in sending order.
  const stored = entries.filter((e) => e.id !== null).sort((a, b) => a.id! - b.id!);
  return [...stored, ...entries.filter((e) => e.id === null)];
}

function reducer(entries: Entry[], action: Action): Entry[] {
  switch (action.type) {
    case 'stored': {
      // A stored message can arrive three ways (the POST response, the channel, the history) and
      // in any order: it replaces the optimistic entry with its client id, and is added only once.
      let next = entries;
      for (const m of action.messages) {
        if (next.some((e) => e.id === m.id)) continue;
        const optimistic = next.findIndex((e) => e.id === null && e.clientId === m.client_id && e.userId === m.user_id);
        next = optimistic >= 0 ? next.map((e, i) => (i === optimistic ? fromMessage(m) : e)) : [...next, fromMessage(m)];
      }
      return next === entries ? entries : order(next);
    }
    case 'pending':
      return [...entries, action.entry];
    case 'failed':
    case 'retry':
      return entries.map((e) =>
        e.clientId === action.clientId && e.id === null
          ? { ...e, status: action.type === 'failed' ? 'failed' : 'pending' }
          : e,
      );
  }
}

/**
 * The messages of one room: the latest ones from the backend when the room opens, then live ones from
 * `private-room-{room}`, and optimistic sends reconciled with what was stored.
 *
 * Nothing is refetched after a reconnection: Herald keeps the channel's recent events (the app's
 * `history_size`), and `useEvent` (through herald-channels-recovery) replays the ones published while this
 * page was offline, once each and in order. Only when it says that was impossible (`recovered:
 * false`: offline longer than the history reaches, or Herald lost it) does the page ask the backend.
 */
export function useRoomMessages(room: string, me: string) {
  const pusher = usePusher();
  const channel = useChannel(`private-room-${room}`);
  const { status, error } = useChannelStatus(channel);
  const [entries, dispatch] = useReducer(reducer, []);
  const [loaded, markLoaded] = useReducer(() => true, false);

  const lastId = useRef<number | null>(null);
  useEffect(() => {
    const ids = entries.filter((e) => e.id !== null).map((e) => e.id!);
    lastId.current = ids.length ? Math.max(...ids) : null;
  }, [entries]);

  const { recovered, recovery } = useEvent<Message>(channel, 'message', (message) =>
    dispatch({ type: 'stored', messages: [message] }),
  );

  // Pages through the backend's history after `after` (the latest page when null). Events that
  // arrive meanwhile are newer, and duplicates are dropped by id.
  const load = useCallback(
    async (after: number | null, isCancelled: () => boolean) => {
      for (;;) {
        const { messages } = await api.history(room, after);
        if (isCancelled()) return;
        dispatch({ type: 'stored', messages });
        if (after === null || messages.length < HISTORY_PAGE) break;
        after = messages[messages.length - 1].id;
      }
    },
    [room],
  );

  // Once, when the room's subscription first succeeds.
  useEffect(() => {
    if (status !== 'subscribed' || loaded) return undefined;
    let cancelled = false;
    load(null, () => cancelled)
      .then(() => {
        if (!cancelled) markLoaded();
      })
      .catch((e) => console.warn('history', e));
    return () => {
      cancelled = true;
    };
  }, [status, loaded, load]);

  // And again only when missed messages could not be recovered.
  useEffect(() => {
    if (recovered !== false) return undefined;
    let cancelled = false;
    load(lastId.current, () => cancelled).catch((e) => console.warn('history', e));
    return () => {
      cancelled = true;
    };
  }, [recovered, recovery, load]);

  const post = useCallback(
    async (entry: Entry) => {
      try {
        const { message } = await api.send(room, {
          text: entry.text,
          client_id: entry.clientId,
          // Herald leaves this connection out: the page already shows the message.
          socket_id: pusher?.connection.socket_id,
        });
        dispatch({ type: 'stored', messages: [message] });
      } catch (e) {
        console.warn('send', e);
        dispatch({ type: 'failed', clientId: entry.clientId });
      }
    },
    [room, pusher],
  );

  const send = useCallback(
    (text: string) => {
      const entry: Entry = { clientId: newClientId(), userId: me, text, id: null, status: 'pending', createdAt: Date.now() };
      dispatch({ type: 'pending', entry });
      void post(entry);
    },
    [me, post],
  );

  const retry = useCallback(
    (entry: Entry) => {
      // Same client id: if the first attempt was stored after all, the backend answers with it.
      dispatch({ type: 'retry', clientId: entry.clientId });
      void post(entry);
    },
    [post],
  );

  return { channel, entries, send, retry, status, error, loaded };
}
