// The per-channel state machine fed synthetic frames: ordering, duplicates, gaps, skipped positions,
// epochs and Herald's answers, without a server.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { RecoveredChannel, type ChannelHost, type RecoveryResult } from '../src/channel';

interface Fake {
  host: ChannelHost;
  requests: Array<string | null>;
  connected: boolean;
}

function fakeHost(overrides: Partial<ChannelHost> = {}): Fake {
  const fake: Fake = {
    requests: [],
    connected: true,
    host: undefined as unknown as ChannelHost,
  };
  fake.host = {
    positions: true,
    timeoutMs: 1000,
    maxBuffered: 100,
    requestRecovery: (_channel, position) => {
      if (!fake.connected) return false;
      fake.requests.push(position);
      return true;
    },
    ...overrides,
  };
  return fake;
}

function setup(since: string | null = null, overrides: Partial<ChannelHost> = {}) {
  const fake = fakeHost(overrides);
  const channel = new RecoveredChannel('room', fake.host, since);
  const got: Array<[string, unknown, string | undefined]> = [];
  const results: RecoveryResult[] = [];
  channel.bind_global((event, data, meta) => got.push([event, data, meta.position]));
  channel.onRecovery((r) => results.push(r));
  const ev = (offset: number, epoch = '7') => channel.event('msg', { n: offset }, {}, `${epoch}-${offset}`);
  const offsets = () => got.map(([, data]) => (data as { n: number }).n);
  return { fake, channel, got, results, ev, offsets };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('RecoveredChannel', () => {
  it('delivers in order, drops duplicates, and passes events without positions through', () => {
    const { channel, got, ev, offsets, fake } = setup();
    channel.subscribed('7-0');
    ev(1);
    ev(2);
    ev(2);
    ev(1);
    channel.event('client-typing', { t: 1 }, { user_id: 'u' }, undefined);
    ev(3);
    expect(offsets().filter((n) => n !== undefined)).toEqual([1, 2, 3]);
    expect(got[2]).toEqual(['client-typing', { t: 1 }, undefined]);
    expect(got[0][2]).toBe('7-1');
    expect(channel.position).toBe('7-3');
    expect(fake.requests).toEqual([]);
  });

  it('holds events behind a gap, asks from the last position, and fills the gap in order', () => {
    const { channel, ev, offsets, fake, results } = setup();
    channel.subscribed('7-0');
    ev(1);
    ev(4);
    ev(5);
    expect(offsets()).toEqual([1]);
    expect(fake.requests).toEqual(['7-1']);
    ev(2); // the replay
    ev(3);
    expect(offsets()).toEqual([1, 2, 3, 4, 5]);
    channel.answered({ recovered: true, count: 2, position: '7-3' });
    expect(results).toEqual([{ channel: 'room', recovered: true, count: 2, cause: 'gap', position: '7-5' }]);
    ev(6);
    expect(offsets()).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('treats a skipped position like a delivered one', () => {
    const { channel, ev, offsets, fake } = setup();
    channel.subscribed('7-0');
    ev(1);
    channel.skipped('7-2');
    ev(3);
    expect(offsets()).toEqual([1, 3]);
    expect(fake.requests).toEqual([]);
  });

  it('recovers after a resubscription and reports it', () => {
    const { channel, ev, offsets, fake, results } = setup();
    channel.subscribed('7-0');
    ev(1);
    channel.disconnected();
    channel.subscribed('7-4'); // three events were published meanwhile
    expect(fake.requests).toEqual(['7-1']);
    ev(5); // live, ahead of the replay: held
    ev(2);
    ev(3);
    ev(4);
    ev(5); // the replay reached it too
    channel.answered({ recovered: true, count: 4, position: '7-5' });
    expect(offsets()).toEqual([1, 2, 3, 4, 5]);
    expect(results.map((r) => [r.recovered, r.count, r.cause])).toEqual([[true, 4, 'resubscribe']]);
    expect(channel.recovered).toBe(true);
  });

  it('says recovered without asking when nothing was missed', () => {
    const { channel, ev, fake, results } = setup();
    channel.subscribed('7-0');
    ev(1);
    channel.subscribed('7-1');
    expect(fake.requests).toEqual([]);
    expect(results.map((r) => [r.recovered, r.count])).toEqual([[true, 0]]);
  });

  it('on a refusal delivers what it holds in order and goes on from the position Herald gives', () => {
    const { channel, ev, offsets, results } = setup();
    channel.subscribed('7-0');
    ev(1);
    ev(3);
    ev(1, '9'); // a new epoch: the history started over
    ev(2, '9');
    channel.answered({ recovered: false, count: 0, position: '9-0', reason: 'history_lost' });
    expect(offsets()).toEqual([1, 3, 1, 2]);
    expect(results.map((r) => [r.recovered, r.reason, r.position])).toEqual([[false, 'history_lost', '9-2']]);
    ev(3, '9');
    ev(3, '7');
    expect(offsets()).toEqual([1, 3, 1, 2, 3]);
  });

  it('gives up after the timeout and after too many held events', () => {
    vi.useFakeTimers();
    const { channel, ev, offsets, results, fake } = setup();
    channel.subscribed('7-0');
    ev(2);
    vi.advanceTimersByTime(1001);
    expect(offsets()).toEqual([2]);
    expect(results.map((r) => r.reason)).toEqual(['timeout']);
    channel.answered({ recovered: true, count: 1, position: '7-1' }); // too late: ignored
    ev(10);
    for (let i = 12; i < 12 + 101; i++) ev(i);
    expect(results.map((r) => r.reason)).toEqual(['timeout', 'overflow']);
    expect(offsets().length).toBe(1 + 102);
    expect(fake.requests.length).toBe(2);
  });

  it('asks again after a refusal that may pass, holding events meanwhile', () => {
    vi.useFakeTimers();
    const { channel, ev, offsets, fake, results } = setup();
    channel.subscribed('7-0');
    ev(1);
    ev(3);
    channel.answered({ recovered: false, count: 0, position: null, reason: 'unavailable' });
    expect(offsets()).toEqual([1]);
    expect(results).toEqual([]);
    vi.advanceTimersByTime(1000);
    expect(fake.requests).toEqual(['7-1', '7-1']);
    channel.answered({ recovered: false, count: 0, position: null, reason: 'rate_limited' });
    vi.advanceTimersByTime(2000);
    ev(2);
    channel.answered({ recovered: true, count: 1, position: '7-2' });
    expect(offsets()).toEqual([1, 2, 3]);
    expect(results.map((r) => [r.recovered, r.count])).toEqual([[true, 1]]);
    // Only so often: then it gives up.
    ev(5);
    for (const delay of [1000, 2000, 4000]) {
      channel.answered({ recovered: false, count: 0, position: null, reason: 'busy' });
      vi.advanceTimersByTime(delay);
    }
    channel.answered({ recovered: false, count: 0, position: '7-5', reason: 'busy' });
    expect(results.map((r) => [r.recovered, r.reason])).toEqual([[true, undefined], [false, 'busy']]);
    expect(offsets()).toEqual([1, 2, 3, 5]);
    expect(fake.requests.length).toBe(3 + 4);
  });

  it('a connection lost during a recovery asks again on the next subscription', () => {
    const { channel, ev, fake, results } = setup();
    channel.subscribed('7-0');
    ev(1);
    channel.subscribed('7-3');
    channel.disconnected();
    channel.answered({ recovered: true, count: 2, position: '7-3' }); // from the old socket: ignored
    expect(results).toEqual([]);
    channel.subscribed('7-3');
    expect(fake.requests).toEqual(['7-1', '7-1']);
  });

  it('not connected: asks on the next subscription', () => {
    const { channel, ev, fake } = setup();
    channel.subscribed('7-0');
    fake.connected = false;
    ev(3);
    expect(fake.requests).toEqual([]);
    fake.connected = true;
    channel.subscribed('7-3');
    expect(fake.requests).toEqual(['7-0']);
  });

  it('asks from its own position when Herald could not say where the subscription starts', () => {
    const { channel, ev, fake } = setup();
    channel.subscribed('7-0');
    ev(1);
    channel.subscribed(null, true);
    expect(fake.requests).toEqual(['7-1']);
    const fresh = setup();
    fresh.channel.subscribed(null, true);
    fresh.channel.subscribed(null, true);
    expect(fresh.fake.requests).toEqual([]);
    expect(fresh.results.map((r) => r.reason)).toEqual(['no_position']);
  });

  it('starts from a given position on the first subscription', () => {
    const { channel, fake, results } = setup('7-5');
    channel.subscribed('7-8');
    expect(fake.requests).toEqual(['7-5']);
    channel.answered({ recovered: true, count: 3, position: '7-8' });
    expect(results.map((r) => [r.recovered, r.cause])).toEqual([[true, 'since']]);
  });

  it('channels without history and clients without positions report recovered false', () => {
    const plain = setup();
    plain.channel.subscribed(undefined);
    plain.channel.event('msg', { n: 1 }, {}, undefined);
    plain.channel.subscribed(undefined);
    expect(plain.offsets()).toEqual([1]);
    expect(plain.results.map((r) => [r.recovered, r.reason])).toEqual([[false, 'no_history']]);
    const blind = setup(null, { positions: false });
    blind.channel.subscribed(undefined);
    blind.channel.subscribed(undefined);
    expect(blind.results.map((r) => [r.recovered, r.reason])).toEqual([[false, 'unsupported']]);
  });

  it('a throwing callback does not stop the others', () => {
    const { channel, ev, offsets } = setup();
    const errors = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    channel.bind('msg', () => {
      throw new Error('app bug');
    });
    channel.subscribed('7-0');
    ev(1);
    ev(2);
    expect(offsets()).toEqual([1, 2]);
    expect(errors).toHaveBeenCalledTimes(2);
    errors.mockRestore();
  });
});
