import { useCallback, useEffect, useRef, useState } from 'react';
import type { PresenceChannel } from 'pusher-js';
import { useClientTrigger, useEvent } from 'herald-channels-react';

/** Send at most one "typing" client event per this many ms while the user keeps typing. */
const SEND_EVERY_MS = 1500;
/** Show someone as typing this long after their last event. */
const SHOW_FOR_MS = 4000;

interface Typing {
  typing: boolean;
}

/**
 * A typing indicator over client events on the room's presence channel: they go from browser to
 * browser through Herald without touching the backend, and Herald stamps each with the sender's
 * user id (metadata.user_id), so nobody can pretend to be someone else.
 */
export function useTyping(channel: PresenceChannel | null) {
  const trigger = useClientTrigger(channel);
  const [typing, setTyping] = useState<ReadonlyMap<string, number>>(new Map());
  const lastSent = useRef(0);

  useEvent<Typing>(channel, 'client-typing', (data, metadata) => {
    const user = metadata.user_id;
    if (!user) return;
    setTyping((current) => {
      const next = new Map(current);
      if (data?.typing) next.set(user, Date.now() + SHOW_FOR_MS);
      else next.delete(user);
      return next;
    });
  });

  // Expire entries whose sender went quiet.
  useEffect(() => {
    if (typing.size === 0) return undefined;
    const soonest = Math.min(...typing.values());
    const timer = setTimeout(() => {
      const now = Date.now();
      setTyping((current) => new Map([...current].filter(([, until]) => until > now)));
    }, Math.max(0, soonest - Date.now()) + 10);
    return () => clearTimeout(timer);
  }, [typing]);

  /** Call on every keystroke; sends when the last event is old enough. */
  const keystroke = useCallback(() => {
    const now = Date.now();
    if (now - lastSent.current < SEND_EVERY_MS) return;
    if (trigger('client-typing', { typing: true })) lastSent.current = now;
  }, [trigger]);

  /** Call when the message went out (or the input was cleared). */
  const stopped = useCallback(() => {
    if (lastSent.current === 0) return;
    lastSent.current = 0;
    trigger('client-typing', { typing: false });
  }, [trigger]);

  /** Someone's message arrived: they stopped typing, whatever their last event said. */
  const clear = useCallback((user: string) => {
    setTyping((current) => {
      if (!current.has(user)) return current;
      const next = new Map(current);
      next.delete(user);
      return next;
    });
  }, []);

  return { typingUsers: [...typing.keys()], keystroke, stopped, clear };
}
