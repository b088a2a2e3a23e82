// The backend's HTTP API (examples/chat/server/app.py). Same origin: the session cookie goes along.

export interface User {
  id: string;
  name: string;
  color: string;
}

export interface Room {
  id: string;
  title: string;
  members: string[];
}

export interface Message {
  id: number;
  room: string;
  user_id: string;
  text: string;
  client_id: string;
  created_at: number;
}

export interface Config {
  key: string;
  wsHost: string;
  wsPort: number;
}

export interface Directory {
  users: User[];
  rooms: Room[];
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    body: string,
  ) {
    super(`HTTP ${status}: ${body}`);
  }
}

async function request<T>(path: string, init?: RequestInit): Promise<T> {
  const res = await fetch(path, {
    ...init,
    headers: init?.body ? { 'Content-Type': 'application/json' } : undefined,
  });
  if (!res.ok) throw new HttpError(res.status, await res.text());
  return (await res.json()) as T;
}

export const api = {
  async me(): Promise<User | null> {
    try {
      return await request<User>('/me');
    } catch (e) {
      if (e instanceof HttpError && e.status === 401) return null;
      throw e;
    }
  },
  directory: () => request<Directory>('/directory'),
  login: (user: string) => request<User>('/login', { method: 'POST', body: JSON.stringify({ user }) }),
  logout: () => request<object>('/logout', { method: 'POST' }),
  config: (node: string | null) => request<Config>(node ? `/config?node=${encodeURIComponent(node)}` : '/config'),
  history: (room: string, after: number | null) =>
    request<{ messages: Message[] }>(
      `/rooms/${encodeURIComponent(room)}/messages${after === null ? '' : `?after=${after}`}`,
    ),
  send: (room: string, body: { text: string; client_id: string; socket_id: string | undefined }) =>
    request<{ message: Message; delivered: boolean }>(`/rooms/${encodeURIComponent(room)}/messages`, {
      method: 'POST',
      body: JSON.stringify(body),
    }),
};

/** A unique id for an optimistic message (crypto.randomUUID needs a secure context; a LAN address
 * over plain http is not one). */
export function newClientId(): string {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
