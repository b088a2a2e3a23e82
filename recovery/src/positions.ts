/**
 * Positions of events in a channel's history: `"<epoch>-<offset>"`. The offset counts the channel's
 * events; the epoch names the run of history they belong to (a history that was lost starts over
 * under a new epoch). Positions are only comparable within one epoch.
 */
export interface Position {
  epoch: string;
  offset: number;
}

const POSITION = /^([1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})$/;

export function parsePosition(value: unknown): Position | null {
  if (typeof value !== 'string') return null;
  const match = POSITION.exec(value);
  if (!match) return null;
  const offset = Number(match[2]);
  if (!Number.isSafeInteger(offset)) return null;
  return { epoch: match[1], offset };
}

export function formatPosition(position: Position): string {
  return `${position.epoch}-${position.offset}`;
}
