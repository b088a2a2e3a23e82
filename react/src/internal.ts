import { useInsertionEffect, useRef } from 'react';

/**
 * A ref that always holds the latest value, updated before any layout or
 * passive effect runs. useInsertionEffect is used because it is silent during
 * server rendering (useLayoutEffect warns there in React 18).
 */
export function useLatest<T>(value: T): { readonly current: T } {
  const ref = useRef(value);
  useInsertionEffect(() => {
    ref.current = value;
  });
  return ref;
}

export type ChannelKind = 'public' | 'private' | 'private-encrypted' | 'presence' | 'internal';

/** Channel type from its name, with the prefix tests anchored at the start. */
export function channelKind(name: string): ChannelKind {
  if (name.startsWith('#')) return 'internal';
  if (name.startsWith('presence-')) return 'presence';
  if (name.startsWith('private-encrypted-')) return 'private-encrypted';
  if (name.startsWith('private-')) return 'private';
  return 'public';
}
