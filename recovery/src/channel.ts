import { formatPosition, parsePosition, type Position } from './positions';

/** What callbacks get besides the data. */
export interface EventMetadata {
  /** Sender of a client event on a presence channel (as pusher-js gives it). */
  user_id?: string;
  /** The event's position in the channel's history (channels with history only). */
  position?: string;
}

export type EventCallback<T = any> = (data: T, metadata: EventMetadata) => void;
export type GlobalCallback = (event: string, data: any, metadata: EventMetadata) => void;

/** Why a recovery was asked for. */
export type RecoveryCause = 'resubscribe' | 'gap' | 'since';

/** The outcome of one recovery. */
export interface RecoveryResult {
  channel: string;
  /**
   * true: every event published while the client was away has been delivered, in order (`count` of
   * them came from the server's history). false: some may be missing; an app that must be complete
   * reloads its state (`reason` says why).
   */
  recovered: boolean;
  count: number;
  /** Herald's reason (`history_lost`, `no_history`, `too_many`, `rate_limited`, `unavailable`, ...),
   * or the helper's own: `unsupported` (pusher-js version), `timeout`, `no_position`, `overflow`, `incomplete`. */
  reason?: string;
  cause: RecoveryCause;
  /** The channel's position after the recovery. */
  position: string | null;
}

export type RecoveryListener = (result: RecoveryResult) => void;

/** Herald's answer to `herald:recover` (its `data`). */
export interface RecoverAnswer {
  recovered?: unknown;
  count?: unknown;
  position?: unknown;
  reason?: unknown;
}

/** What a channel needs from the client it belongs to. */
export interface ChannelHost {
  /** Sends `herald:recover` for the channel from `position`; false when it could not be sent. */
  requestRecovery(channel: string, position: string | null): boolean;
  /** Whether frames carry positions (false: pusher-js version not supported). */
  readonly positions: boolean;
  readonly timeoutMs: number;
  readonly maxBuffered: number;
}

interface Item {
  event: string;
  data: unknown;
  metadata: EventMetadata;
}

// Herald's refusals that may pass (its store briefly unreachable, the socket's budget, a recovery
// already running): asked again after 1, 2 then 4 s before giving up.
const TRANSIENT = new Set(['unavailable', 'rate_limited', 'busy']);
const RETRY_DELAYS_MS = [1000, 2000, 4000];

/**
 * One channel as seen through the helper: callbacks bound here get each event once, in the order of
 * the channel's history, including the events missed while the connection was down.
 *
 * The positions of delivered events advance one by one. An event further ahead (a gap: the client
 * was away, or its node lost events) is held back while the missed ones are asked for; those come in
 * order from Herald's history, then the held ones follow. A duplicate (a position already delivered)
 * is dropped.
 */
export class RecoveredChannel {
  private last: Position | null = null;
  private subscribedBefore = false;
  // A recovery asked for (waiting for the answer), or waiting to be asked again after a transient refusal.
  private pending: { cause: RecoveryCause; timer: ReturnType<typeof setTimeout>; attempt: number; asked: boolean } | null =
    null;
  // Events held back behind a gap: epoch -> offset -> event (null: a position skipped for this client).
  private held = new Map<string, Map<number, Item | null>>();
  private heldCount = 0;
  private readonly callbacks = new Map<string, EventCallback[]>();
  private readonly globalCallbacks: GlobalCallback[] = [];
  private readonly listeners: RecoveryListener[] = [];
  private result: RecoveryResult | null = null;

  // The app gave a position to start from (e.g. the end of what it loaded over HTTP): the first
  // subscription recovers from there.
  private sinceGiven: boolean;

  constructor(
    readonly name: string,
    private readonly host: ChannelHost,
    since: string | null = null,
  ) {
    this.last = parsePosition(since);
    this.sinceGiven = this.last !== null;
  }

  // -- the app's side -----------------------------------------------------------------------------

  /** Calls `callback(data, metadata)` for each `event` on the channel, once each, in order. */
  bind<T = any>(event: string, callback: EventCallback<T>): this {
    const list = this.callbacks.get(event) ?? [];
    list.push(callback as EventCallback);
    this.callbacks.set(event, list);
    return this;
  }

  /** Removes `callback` from `event` (every callback of the event without one, every binding without either). */
  unbind(event?: string, callback?: EventCallback): this {
    if (event === undefined) {
      this.callbacks.clear();
    } else if (callback === undefined) {
      this.callbacks.delete(event);
    } else {
      const list = (this.callbacks.get(event) ?? []).filter((cb) => cb !== callback);
      if (list.length) this.callbacks.set(event, list);
      else this.callbacks.delete(event);
    }
    return this;
  }

  /** Calls `callback(event, data, metadata)` for every event on the channel. */
  bind_global(callback: GlobalCallback): this {
    this.globalCallbacks.push(callback);
    return this;
  }

  unbind_global(callback?: GlobalCallback): this {
    if (callback === undefined) this.globalCallbacks.length = 0;
    else {
      const index = this.globalCallbacks.indexOf(callback);
      if (index >= 0) this.globalCallbacks.splice(index, 1);
    }
    return this;
  }

  /** Calls `listener` with the outcome of every recovery; returns the function that stops it. */
  onRecovery(listener: RecoveryListener): () => void {
    this.listeners.push(listener);
    return () => {
      const index = this.listeners.indexOf(listener);
      if (index >= 0) this.listeners.splice(index, 1);
    };
  }

  /** The position of the last event delivered (or where the subscription started). */
  get position(): string | null {
    return this.last ? formatPosition(this.last) : null;
  }

  /** The outcome of the latest recovery: null before any, false when events may be missing. */
  get recovered(): boolean | null {
    return this.result ? this.result.recovered : null;
  }

  get lastRecovery(): RecoveryResult | null {
    return this.result;
  }

  // -- the client's side (called by HeraldRecovery) -----------------------------------------------

  /** @internal pusher_internal:subscription_succeeded: on a channel with history (`history`), Herald's
   * start position, or null when Herald could not read it. */
  subscribed(position: unknown, history = position !== undefined): void {
    const again = this.subscribedBefore;
    const cause: RecoveryCause = again ? 'resubscribe' : this.sinceGiven ? 'since' : 'gap';
    const asked = again || this.sinceGiven;
    this.subscribedBefore = true;
    this.sinceGiven = false;
    this.cancelPending();
    if (!this.host.positions) {
      if (asked) this.report({ recovered: false, count: 0, reason: 'unsupported', cause });
      return;
    }
    const start = parsePosition(position);
    if (!history) {
      // The channel keeps no history (or the server is not Herald): nothing can be recovered.
      this.flushHeld(null);
      this.last = null;
      if (asked) this.report({ recovered: false, count: 0, reason: 'no_history', cause });
      return;
    }
    const last = this.last;
    if (start === null) {
      // History, but Herald could not say where the subscription starts (its store was unreachable):
      // ask from where this client is; the answer (or its retries) decides.
      if (last !== null) this.request(cause);
      else if (asked) this.report({ recovered: false, count: 0, reason: 'no_position', cause });
      return;
    }
    if (last === null) {
      this.last = start;
      if (asked) this.report({ recovered: false, count: 0, reason: 'no_position', cause });
      return;
    }
    if (start.epoch === last.epoch && start.offset <= last.offset) {
      // Nothing was published that this client has not had.
      this.drain();
      if (asked) this.report({ recovered: true, count: 0, cause });
      return;
    }
    this.request(cause);
  }

  /** @internal An event on the channel; `position` when Herald's frame carried one. */
  event(event: string, data: unknown, metadata: EventMetadata, position: unknown): void {
    const at = parsePosition(position);
    if (at === null) {
      // Client events, events of channels without history: delivered as they come.
      this.emit({ event, data, metadata });
      return;
    }
    metadata.position = formatPosition(at);
    this.positioned(at, { event, data, metadata });
  }

  /** @internal A position this client does not get the event of (a trigger excluded its socket). */
  skipped(position: unknown): void {
    const at = parsePosition(position);
    if (at !== null) this.positioned(at, null);
  }

  /** @internal Herald's answer to herald:recover. */
  answered(answer: RecoverAnswer): void {
    const pending = this.pending;
    if (pending === null || !pending.asked) return; // an answer for a connection that is gone
    this.cancelPending();
    const position = parsePosition(answer.position);
    const count = typeof answer.count === 'number' ? answer.count : 0;
    if (answer.recovered === true) {
      const last = this.last;
      // The replay may end on positions this client does not get (excluded): it is there now.
      if (position !== null && (last === null || (position.epoch === last.epoch && position.offset > last.offset))) {
        this.last = position;
      }
      this.drain();
      if (this.heldCount > 0) {
        // Still a gap (the node lost more meanwhile): ask again, a few times.
        if (pending.attempt < RETRY_DELAYS_MS.length) {
          this.request(pending.cause, pending.attempt + 1);
          return;
        }
        this.flushHeld(null);
        this.report({ recovered: false, count, reason: 'incomplete', cause: pending.cause });
        return;
      }
      this.report({ recovered: true, count, cause: pending.cause });
      return;
    }
    const reason = typeof answer.reason === 'string' ? answer.reason : 'refused';
    if (TRANSIENT.has(reason) && pending.attempt < RETRY_DELAYS_MS.length) {
      const timer = setTimeout(() => {
        if (this.pending?.timer === timer) this.request(pending.cause, pending.attempt + 1);
      }, RETRY_DELAYS_MS[pending.attempt]);
      this.pending = { cause: pending.cause, timer, attempt: pending.attempt + 1, asked: false };
      return;
    }
    this.flushHeld(position);
    this.report({ recovered: false, count: 0, reason, cause: pending.cause });
  }

  /** @internal The connection went down: an unanswered request is void; the next subscription asks again. */
  disconnected(): void {
    this.cancelPending();
  }

  // -- internals -----------------------------------------------------------------------------------

  private positioned(at: Position, item: Item | null): void {
    const last = this.last;
    if (last === null) {
      this.last = at;
      this.emit(item);
      return;
    }
    if (at.epoch === last.epoch) {
      if (at.offset <= last.offset) return; // had it already
      if (at.offset === last.offset + 1) {
        this.last = at;
        this.emit(item);
        this.drain();
        return;
      }
    }
    this.hold(at, item);
    if (this.heldCount > this.host.maxBuffered) {
      this.cancelPending();
      this.flushHeld(null);
      this.report({ recovered: false, count: 0, reason: 'overflow', cause: 'gap' });
      return;
    }
    if (this.pending === null) this.request('gap');
  }

  private hold(at: Position, item: Item | null): void {
    let epoch = this.held.get(at.epoch);
    if (!epoch) {
      epoch = new Map();
      this.held.set(at.epoch, epoch);
    }
    if (!epoch.has(at.offset)) {
      epoch.set(at.offset, item);
      this.heldCount += 1;
    }
  }

  /** Delivers held events that now follow the last one, and forgets those already covered. */
  private drain(): void {
    const last = this.last;
    if (last === null) return;
    const epoch = this.held.get(last.epoch);
    if (!epoch) return;
    for (const offset of [...epoch.keys()]) {
      if (offset <= last.offset) {
        epoch.delete(offset);
        this.heldCount -= 1;
      }
    }
    let next = last.offset + 1;
    while (epoch.has(next)) {
      const item = epoch.get(next) ?? null;
      epoch.delete(next);
      this.heldCount -= 1;
      this.last = { epoch: last.epoch, offset: next };
      this.emit(item);
      next += 1;
    }
    if (epoch.size === 0) this.held.delete(last.epoch);
  }

  /**
   * Recovery failed: deliver everything held anyway, in order (the current epoch first), and go on
   * from `position` (where Herald says the socket now is) or from the last event delivered.
   */
  private flushHeld(position: Position | null): void {
    const epochs = [...this.held.keys()];
    const last = this.last;
    if (last !== null) epochs.sort((a, b) => (a === last.epoch ? -1 : b === last.epoch ? 1 : 0));
    const held = this.held;
    this.held = new Map();
    this.heldCount = 0;
    let newest: Position | null = null;
    for (const epoch of epochs) {
      const items = held.get(epoch)!;
      for (const offset of [...items.keys()].sort((a, b) => a - b)) {
        if (last !== null && epoch === last.epoch && offset <= last.offset) continue;
        this.emit(items.get(offset) ?? null);
        newest = { epoch, offset };
      }
    }
    if (position !== null) {
      this.last = newest !== null && newest.epoch === position.epoch && newest.offset > position.offset ? newest : position;
    } else if (newest !== null) {
      this.last = newest;
    }
  }

  private request(cause: RecoveryCause, attempt = 0): void {
    this.pending = null;
    const sent = this.host.requestRecovery(this.name, this.position);
    if (!sent) return; // not connected: the next subscription asks
    const timer = setTimeout(() => {
      if (this.pending?.timer !== timer) return;
      this.pending = null;
      this.flushHeld(null);
      this.report({ recovered: false, count: 0, reason: 'timeout', cause });
    }, this.host.timeoutMs);
    this.pending = { cause, timer, attempt, asked: true };
  }

  private cancelPending(): void {
    if (this.pending !== null) {
      clearTimeout(this.pending.timer);
      this.pending = null;
    }
  }

  private report(result: Omit<RecoveryResult, 'channel' | 'position'>): void {
    this.result = { channel: this.name, position: this.position, ...result };
    for (const listener of [...this.listeners]) {
      try {
        listener(this.result);
      } catch (error) {
        console.error(`herald-channels-recovery: a recovery listener of ${this.name} threw`, error);
      }
    }
  }

  private emit(item: Item | null): void {
    if (item === null) return;
    for (const callback of [...(this.callbacks.get(item.event) ?? [])]) {
      try {
        callback(item.data, item.metadata);
      } catch (error) {
        console.error(`herald-channels-recovery: a callback for ${item.event} on ${this.name} threw`, error);
      }
    }
    for (const callback of [...this.globalCallbacks]) {
      try {
        callback(item.event, item.data, item.metadata);
      } catch (error) {
        console.error(`herald-channels-recovery: a global callback on ${this.name} threw`, error);
      }
    }
  }
}
