import { useEffect, useState } from 'react';
import type { Channel } from 'pusher-js';
import type { RecoveredChannel, RecoveryResult } from 'herald-channels-recovery';
import { useHeraldContext } from './context';
import { useChannel } from './useChannel';

export interface RecoveryState {
  /**
   * null: nothing to recover yet (no reconnection since the channel was joined). true: after the
   * latest reconnection every missed event was delivered, in order. false: events may be missing
   * (the channel keeps no history, or it no longer reaches back far enough): reload what you show.
   */
  recovered: boolean | null;
  /** The latest outcome, a new object each time (handy as an effect dependency); see herald-channels-recovery. */
  recovery: RecoveryResult | null;
}

const NONE: RecoveryState = { recovered: null, recovery: null };

/**
 * Whether the events `channel` missed while the connection was down were recovered (Herald's
 * channel history, through herald-channels-recovery). `channel` is a Channel or a channel name (the hook
 * then subscribes itself).
 *
 * ```tsx
 * const { recovered, recovery } = useRecovery('chat-general');
 * useEffect(() => { if (recovered === false) reload(); }, [recovery]);
 * ```
 */
export function useRecovery(channel: Channel | string | null | undefined): RecoveryState {
  const { registry } = useHeraldContext('useRecovery');
  const owned = useChannel(typeof channel === 'string' ? channel : null);
  const target = typeof channel === 'string' ? owned : (channel ?? null);
  const [state, setState] = useState<{ followed: RecoveredChannel | null; value: RecoveryState }>({
    followed: null,
    value: NONE,
  });

  useEffect(() => {
    const followed = target && registry && target.pusher === registry.client ? registry.recovered(target.name) : null;
    if (!followed) {
      setState({ followed: null, value: NONE });
      return undefined;
    }
    const show = (result: RecoveryResult | null): void =>
      setState({ followed, value: result ? { recovered: result.recovered, recovery: result } : NONE });
    show(followed.lastRecovery);
    return followed.onRecovery(show);
  }, [target, registry]);

  return target && state.followed?.name === target.name ? state.value : NONE;
}
