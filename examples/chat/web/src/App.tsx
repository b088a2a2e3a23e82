import { useCallback, useEffect, useMemo, useState } from 'react';
import { HeraldProvider, useConnectionState, useUser, useUserEvent, type ConnectionState } from 'herald-channels-react';
import type { Options } from 'pusher-js';
import { api, type Config, type Directory, type User } from './api';
import { Room } from './Room';

export function App() {
  const [me, setMe] = useState<User | null | undefined>(undefined);
  const [directory, setDirectory] = useState<Directory | null>(null);
  const [config, setConfig] = useState<Config | null>(null);
  const [failure, setFailure] = useState<string | null>(null);

  useEffect(() => {
    api.me().then(setMe, (e) => setFailure(String(e)));
  }, []);

  useEffect(() => {
    // Loaded again with every sign-in (the rooms depend on who you are), and only the answers for
    // the current user count: the ones asked for before signing in may arrive after.
    if (me === undefined) return undefined;
    let current = true;
    setDirectory(null);
    setConfig(null);
    // ?node=N asks the backend for its Nth gateway (the browser test puts two users on two).
    const node = new URLSearchParams(window.location.search).get('node');
    Promise.all([api.directory(), me ? api.config(node) : null]).then(
      ([directory, config]) => {
        if (!current) return;
        setDirectory(directory);
        setConfig(config);
      },
      (e) => current && setFailure(String(e)),
    );
    return () => {
      current = false;
    };
  }, [me]);

  if (failure) return <p className="notice">Cannot reach the backend: {failure}</p>;
  if (me === undefined || !directory) return <p className="notice">Loading…</p>;
  if (!me) return <Login users={directory.users} onLogin={setMe} />;
  if (!config) return <p className="notice">Loading…</p>;
  return (
    <Chat
      me={me}
      directory={directory}
      config={config}
      onLogout={() => {
        void api.logout().then(() => {
          setConfig(null);
          setMe(null);
        });
      }}
    />
  );
}

function Login({ users, onLogin }: { users: User[]; onLogin: (user: User) => void }) {
  return (
    <main className="login">
      <h1>Herald chat</h1>
      <p>Sign in as one of the demo users (another browser or a private window can be someone else).</p>
      <div className="login-users">
        {users.map((u) => (
          <button key={u.id} type="button" data-testid={`login-${u.id}`} style={{ borderColor: u.color }}
            onClick={() => void api.login(u.id).then(onLogin)}>
            {u.name}
          </button>
        ))}
      </div>
    </main>
  );
}

function Chat({ me, directory, config, onLogout }: { me: User; directory: Directory; config: Config; onLogout: () => void }) {
  const options = useMemo<Options>(
    () => ({
      cluster: 'herald', // required by the types; unused with wsHost
      wsHost: config.wsHost,
      wsPort: config.wsPort,
      wssPort: config.wsPort,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      channelAuthorization: { endpoint: '/pusher/auth', transport: 'ajax' },
      userAuthentication: { endpoint: '/pusher/user-auth', transport: 'ajax' },
    }),
    [config],
  );
  return (
    <HeraldProvider appKey={config.key} options={options}>
      <ChatLayout me={me} directory={directory} gateway={`${config.wsHost}:${config.wsPort}`} onLogout={onLogout} />
    </HeraldProvider>
  );
}

function roomFromHash(directory: Directory): string {
  const wanted = window.location.hash.replace(/^#\/?/, '');
  return directory.rooms.some((r) => r.id === wanted) ? wanted : (directory.rooms[0]?.id ?? '');
}

function ChatLayout({ me, directory, gateway, onLogout }: { me: User; directory: Directory; gateway: string; onLogout: () => void }) {
  const [roomId, setRoomId] = useState(() => roomFromHash(directory));
  useEffect(() => {
    const onHash = () => setRoomId(roomFromHash(directory));
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, [directory]);

  const users = useMemo(() => new Map(directory.users.map((u) => [u.id, u])), [directory]);
  const room = directory.rooms.find((r) => r.id === roomId) ?? directory.rooms[0];
  // Signs in to Herald (user authentication) and follows the watchlist: who is online anywhere.
  const { isOnline, signedIn } = useUser();
  const mentions = useMentions();

  return (
    <div className="layout">
      <header className="topbar">
        <h1>Herald chat</h1>
        <ConnectionBadge />
        <span className="gateway" data-testid="gateway" title="the gateway this page is connected to">
          via {gateway}
        </span>
        <span className="whoami" data-testid="whoami" style={{ color: me.color }}>
          {me.name}
        </span>
        <button type="button" onClick={onLogout} data-testid="logout">
          Sign out
        </button>
      </header>
      <nav className="sidebar">
        <h3>Rooms</h3>
        <ul>
          {directory.rooms.map((r) => (
            <li key={r.id}>
              <a href={`#/${r.id}`} data-testid={`room-${r.id}`} className={r.id === room?.id ? 'active' : ''}>
                # {r.title}
              </a>
            </li>
          ))}
        </ul>
        <h3>People</h3>
        <ul data-testid="people" data-signed-in={signedIn}>
          {directory.users
            .filter((u) => u.id !== me.id)
            .map((u) => {
              const online = isOnline(u.id);
              return (
                <li key={u.id} data-testid={`person-${u.id}`} data-online={online} className={online ? 'online' : 'offline'}>
                  <span className="dot" aria-hidden />
                  {u.name}
                </li>
              );
            })}
        </ul>
      </nav>
      <Toasts mentions={mentions.list} users={users} dismiss={mentions.dismiss} />
      <main className="main">{room ? <Room key={room.id} room={room} me={me} users={users} /> : <p className="notice">No rooms.</p>}</main>
    </div>
  );
}

const LABELS: Record<ConnectionState, string> = {
  initialized: 'Starting',
  connecting: 'Connecting…',
  connected: 'Live',
  unavailable: 'Offline, retrying',
  failed: 'Not supported',
  disconnected: 'Disconnected',
};

function ConnectionBadge() {
  const state = useConnectionState();
  return (
    <span className={`badge badge-${state}`} data-testid="connection-badge" data-state={state}>
      {LABELS[state]}
    </span>
  );
}

interface Mention {
  room: string;
  message_id: number;
  from: string;
  text: string;
}

const MENTION_SHOWN_MS = 8000;

/** @mentions the backend sends to this user (server-to-user events), wherever they are in the app. */
function useMentions() {
  const [list, setList] = useState<Mention[]>([]);
  const dismiss = useCallback((id: number) => setList((l) => l.filter((m) => m.message_id !== id)), []);
  useUserEvent<Mention>('mention', (mention) => {
    setList((l) => [...l.filter((m) => m.message_id !== mention.message_id), mention]);
    setTimeout(() => dismiss(mention.message_id), MENTION_SHOWN_MS);
  });
  return { list, dismiss };
}

function Toasts({ mentions, users, dismiss }: { mentions: Mention[]; users: ReadonlyMap<string, User>; dismiss: (id: number) => void }) {
  return (
    <div className="toasts" aria-live="polite">
      {mentions.map((m) => (
        <a key={m.message_id} className="toast" data-testid="toast" href={`#/${m.room}`} onClick={() => dismiss(m.message_id)}>
          <strong>{users.get(m.from)?.name ?? m.from}</strong> mentioned you in #{m.room}
          <span>{m.text}</span>
        </a>
      ))}
    </div>
  );
}
