import { useEffect, useRef, useState, type FormEvent } from 'react';
import { useConnectionState, useEvent, usePresenceChannel } from 'herald-channels-react';
import type { Message, Room as RoomInfo, User } from './api';
import { useRoomMessages, type Entry } from './messages';
import { useTyping } from './typing';

interface Props {
  room: RoomInfo;
  me: User;
  users: ReadonlyMap<string, User>;
}

type MemberInfo = Omit<User, 'id'>;

export function Room({ room, me, users }: Props) {
  const { channel, entries, send, retry, status, loaded } = useRoomMessages(room.id, me.id);
  const presence = usePresenceChannel<MemberInfo>(`presence-room-${room.id}`);
  // Offline, nobody is known to be here: the roster is shown again once the server resent it.
  // (usePresenceChannel alone keeps showing the last roster until the reconnection: it re-reads
  // pusher-js's member list on `state_change`, which pusher-js emits before it empties that list.)
  const live = useConnectionState() === 'connected' && presence.subscribed;
  const { typingUsers, keystroke, stopped, clear } = useTyping(presence.channel);
  useEvent<Message>(channel, 'message', (m) => clear(m.user_id));

  const nameOf = (id: string) => presence.members.get(id)?.name ?? users.get(id)?.name ?? id;
  const others = typingUsers.filter((id) => id !== me.id).map(nameOf);

  if (status === 'failed' || presence.error) {
    return (
      <section className="room">
        <p className="notice" data-testid="room-refused">
          You are not allowed in {room.title}.
        </p>
      </section>
    );
  }

  return (
    <section className="room" data-testid="room" data-room={room.id}>
      <header className="room-header">
        <h2># {room.title}</h2>
        <span className="room-count" data-testid="online-count">
          {live ? `${presence.count} online` : 'reconnecting…'}
        </span>
      </header>
      <div className="room-body">
        <MessageList entries={entries} me={me.id} nameOf={nameOf} colorOf={(id) => users.get(id)?.color} retry={retry} loaded={loaded} />
        <aside className="members" aria-label="Members">
          <h3>In this room</h3>
          <ul>
            {room.members.map((id) => {
              const online = live && presence.members.has(id);
              return (
                <li key={id} data-testid={`member-${id}`} data-online={online} className={online ? 'online' : 'offline'}>
                  <span className="dot" aria-hidden />
                  {nameOf(id)}
                  {id === me.id ? ' (you)' : ''}
                  <span className="sr-only">{online ? ' online' : ' offline'}</span>
                </li>
              );
            })}
          </ul>
        </aside>
      </div>
      <p className="typing" data-testid="typing" aria-live="polite">
        {others.length === 1 && `${others[0]} is typing…`}
        {others.length > 1 && `${others.slice(0, -1).join(', ')} and ${others[others.length - 1]} are typing…`}
      </p>
      <Composer
        onType={keystroke}
        onSend={(text) => {
          stopped();
          send(text);
        }}
      />
    </section>
  );
}

interface ListProps {
  entries: Entry[];
  me: string;
  nameOf: (id: string) => string;
  colorOf: (id: string) => string | undefined;
  retry: (entry: Entry) => void;
  loaded: boolean;
}

function MessageList({ entries, me, nameOf, colorOf, retry, loaded }: ListProps) {
  const bottom = useRef<HTMLLIElement>(null);
  useEffect(() => {
    bottom.current?.scrollIntoView({ block: 'end' });
  }, [entries.length]);

  return (
    <ol className="messages" data-testid="messages" data-loaded={loaded}>
      {loaded && entries.length === 0 && <li className="empty">No messages yet. Say hello!</li>}
      {entries.map((e) => (
        <li
          key={e.clientId + e.userId}
          className={`message ${e.status} ${e.userId === me ? 'mine' : ''}`}
          data-testid="message"
          data-author={e.userId}
          data-status={e.status}
          data-id={e.id ?? ''}
        >
          <span className="author" style={{ color: colorOf(e.userId) }}>
            {nameOf(e.userId)}
          </span>
          <time>{new Date(e.createdAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}</time>
          <p className="text" data-testid="message-text">
            {e.text}
          </p>
          {e.status === 'pending' && <span className="state">sending…</span>}
          {e.status === 'failed' && (
            <button type="button" className="state failed" onClick={() => retry(e)}>
              not sent, retry
            </button>
          )}
        </li>
      ))}
      <li ref={bottom} aria-hidden className="bottom" />
    </ol>
  );
}

function Composer({ onType, onSend }: { onType: () => void; onSend: (text: string) => void }) {
  const [text, setText] = useState('');
  const submit = (event: FormEvent) => {
    event.preventDefault();
    const trimmed = text.trim();
    if (!trimmed) return;
    onSend(trimmed);
    setText('');
  };
  return (
    <form className="composer" onSubmit={submit}>
      <input
        data-testid="composer-input"
        value={text}
        maxLength={2000}
        placeholder="Write a message"
        aria-label="Message"
        onChange={(event) => {
          setText(event.target.value);
          if (event.target.value) onType();
        }}
      />
      <button type="submit" data-testid="composer-send" disabled={!text.trim()}>
        Send
      </button>
    </form>
  );
}
