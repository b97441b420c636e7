import { useMemo, useState, type FormEvent } from 'react';

import { ChatRoom, NotificationBell, PresenceList, RealtimeProvider, useWebSocket } from '../src';
import { devHistory, devLogin, devUnread, tokenSource, type Session } from './devAuth';

export function App() {
  const [session, setSession] = useState<Session | null>(null);
  return session ? <Signed session={session} onLogout={() => setSession(null)} /> : <Login onSession={setSession} />;
}

function Login({ onSession }: { onSession: (s: Session) => void }) {
  const [name, setName] = useState('');
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      onSession(await devLogin(name.trim()));
    } catch (err) {
      setError(String((err as Error).message));
    }
  };
  return (
    <main className="login">
      <h1>AegisX Realtime</h1>
      <form onSubmit={submit}>
        <label>
          Name <input value={name} onChange={(e) => setName(e.target.value)} autoFocus />
        </label>
        <button type="submit" disabled={!name.trim()}>
          Log in
        </button>
      </form>
      {error && <p role="alert">{error}</p>}
      <p className="muted">Development sign-in: any name, tenant "demo".</p>
    </main>
  );
}

function Signed({ session, onLogout }: { session: Session; onLogout: () => void }) {
  const getToken = useMemo(() => tokenSource(session), [session]);
  const fresh = useMemo(() => () => getToken('refresh'), [getToken]);
  const loadHistory = useMemo(() => devHistory(fresh), [fresh]);
  const loadUnread = useMemo(() => devUnread(fresh), [fresh]);
  const [room, setRoom] = useState('');
  const [draftRoom, setDraftRoom] = useState('general');
  return (
    <RealtimeProvider getToken={getToken} user={session.name}>
      <div className="app">
        <header>
          <h1>AegisX Realtime</h1>
          <Status />
          <span className="me">{session.name}</span>
          <NotificationBell loadUnread={loadUnread} />
          <button type="button" onClick={onLogout}>
            Log out
          </button>
        </header>
        <aside>
          <h2>Online</h2>
          <PresenceList />
        </aside>
        <main>
          <form
            className="join"
            onSubmit={(e) => {
              e.preventDefault();
              if (draftRoom.trim()) setRoom(draftRoom.trim());
            }}
          >
            <label>
              Room <input value={draftRoom} onChange={(e) => setDraftRoom(e.target.value)} />
            </label>
            <button type="submit">Join</button>
          </form>
          {room ? <ChatRoom key={room} roomId={room} loadHistory={loadHistory} /> : <p className="muted">Join a room to chat.</p>}
        </main>
      </div>
    </RealtimeProvider>
  );
}

function Status() {
  const { status } = useWebSocket();
  return (
    <span className={`status ${status}`} data-testid="status">
      {status}
    </span>
  );
}
