import { useEffect, useState } from 'react';
import { describe, expect, it } from 'vitest';
import type Pusher from 'pusher-js';
import { HeraldProvider, useChannel, useChannelStatus, useEvent, useRecovery } from '../src';
import { liveSuite } from './helpers/suite';
import { mount, sleep, waitFor } from './helpers/react';

const live = liveSuite();

interface Shown {
  numbers: number[];
  recoveries: Array<boolean | null>;
  reloads: number;
}

/** A list fed by useEvent that reloads when useEvent says events may be missing. */
function Feed({ channel, shown }: { channel: string; shown: Shown }) {
  const [numbers, setNumbers] = useState<number[]>([]);
  const { recovered, recovery } = useEvent<{ n: number }>(channel, 'number', (data, meta) => {
    expect(meta.position).toMatch(/^\d+-\d+$/);
    setNumbers((list) => [...list, data.n]);
  });
  useEffect(() => {
    if (recovery === null) return;
    shown.recoveries.push(recovered);
    if (recovered === false) shown.reloads += 1;
  }, [recovery, recovered, shown]);
  shown.numbers = numbers;
  const { status } = useChannelStatus(useChannel(channel));
  return <span data-testid="status">{`${status} ${String(recovered)}`}</span>;
}

async function publish(channel: string, from: number, to: number): Promise<void> {
  for (let n = from; n < to; n++) await live.sdk.trigger(channel, 'number', { n });
}

async function offline(pusher: Pusher, during: () => Promise<void>): Promise<void> {
  pusher.disconnect();
  await waitFor(() => pusher.connection.state === 'disconnected');
  await during();
  pusher.connect();
}

describe('recovery through the hooks', () => {
  it('useEvent delivers what was published while offline, once and in order, and says recovered', async () => {
    const pusher = live.user('ann');
    const shown: Shown = { numbers: [], recoveries: [], reloads: 0 };
    const view = mount(
      <HeraldProvider client={pusher}>
        <Feed channel="history-feed" shown={shown} />
      </HeraldProvider>,
    );
    live.views.push(view);
    await waitFor(() => view.text('status') === 'subscribed null');
    await publish('history-feed', 0, 3);
    await waitFor(() => shown.numbers.length === 3);
    await offline(pusher, () => publish('history-feed', 3, 13));
    await waitFor(() => view.text('status') === 'subscribed true');
    await publish('history-feed', 13, 15);
    await waitFor(() => shown.numbers.length === 15);
    await sleep(100);
    expect(shown.numbers).toEqual(Array.from({ length: 15 }, (_, i) => i));
    expect(shown.recoveries).toEqual([true]);
    expect(shown.reloads).toBe(0);
    // Only one recovery request went over the wire.
    expect(live.wire.count('herald:recover', 'history-feed')).toBe(1);
  });

  it('says recovered: false where nothing can be recovered, so the app reloads', async () => {
    const pusher = live.user('bob');
    const shown: Shown = { numbers: [], recoveries: [], reloads: 0 };
    function Plain() {
      const { recovered } = useRecovery('plain-feed'); // a channel without history
      return <span data-testid="plain">{String(recovered)}</span>;
    }
    const view = mount(
      <HeraldProvider client={pusher}>
        <Plain />
      </HeraldProvider>,
    );
    live.views.push(view);
    await waitFor(() => pusher.channel('plain-feed')?.subscribed);
    await offline(pusher, async () => undefined);
    await waitFor(() => view.text('plain') === 'false');
    expect(shown.reloads).toBe(0);
  });
});
