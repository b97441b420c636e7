// The blueprint's chat room (Phase 4.2), on the shared client: history (or replay) on open and
// older pages on scroll with the position kept, the outbox (pending, failed with a retry), a
// typing indicator that expires on the receiving side, Enter to send and Shift+Enter for a new
// line, a banner while disconnected. Accessible names are part of the API (see README).

import { useEffect, useLayoutEffect, useRef, useState, type KeyboardEvent } from 'react';

import { useChatRoom } from '../useChatRoom';
import { useWebSocket, type UseWebSocketOptions } from '../useWebSocket';
import type { HistoryLoader } from '../types';

export interface ChatRoomProps extends UseWebSocketOptions {
  roomId: string;
  /** Pages of stored history (your backend in front of `GET /api/v1/rooms/{id}/messages`). */
  loadHistory?: HistoryLoader;
}

export function ChatRoom({ roomId, loadHistory, ...options }: ChatRoomProps) {
  const { client, status, userId } = useWebSocket(options);
  const room = useChatRoom(client, roomId, { loadHistory });
  const [draft, setDraft] = useState('');
  const listRef = useRef<HTMLDivElement>(null);
  const stickToBottom = useRef(true);
  const keepFromBottom = useRef<number | null>(null);

  const send = () => {
    if (!draft.trim()) return;
    room.send(draft);
    setDraft('');
    stickToBottom.current = true;
  };
  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      send();
    }
  };
  const onScroll = () => {
    const el = listRef.current;
    if (!el) return;
    stickToBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (el.scrollTop < 40 && room.hasOlder && !room.loadingOlder) {
      keepFromBottom.current = el.scrollHeight - el.scrollTop;
      void room.loadOlder();
    }
  };
  // Older messages prepended: keep what the user was looking at in place. New ones: follow
  // the bottom if the user was there.
  useLayoutEffect(() => {
    const el = listRef.current;
    if (!el) return;
    if (keepFromBottom.current !== null && !room.loadingOlder) {
      el.scrollTop = el.scrollHeight - keepFromBottom.current;
      keepFromBottom.current = null;
    } else if (stickToBottom.current) {
      el.scrollTop = el.scrollHeight;
    }
  }, [room.messages, room.outbox, room.loadingOlder]);
  useEffect(() => {
    stickToBottom.current = true;
  }, [roomId]);

  const down = status === 'reconnecting' || status === 'disconnected' || status === 'unauthorized';
  const typingUsers = room.typingUsers;
  const unsent = room.outbox.filter((o) => o.status !== 'sent' || !room.messages.some((m) => m.id === o.id));

  return (
    <section className="chat-room" aria-label={`Room ${roomId}`}>
      {down && (
        <div className="banner" role="alert">
          {status === 'unauthorized'
            ? 'Disconnected: your session has expired. Log in again.'
            : 'Disconnected from chat server. Reconnecting…'}
        </div>
      )}
      <div className="messages" role="log" aria-label={`Messages in ${roomId}`} aria-live="polite" ref={listRef} onScroll={onScroll}>
        {room.loadingOlder && <div className="muted">Loading older messages…</div>}
        {room.messages.map((m) => (
          <div key={m.id} className={`message ${m.userId === userId ? 'mine' : ''}`} data-seq={m.seq}>
            {m.userId !== userId && <div className="author">{m.userName}</div>}
            <div className="text">{m.message}</div>
            <div className="time">{new Date(m.timestamp).toLocaleTimeString()}</div>
          </div>
        ))}
        {unsent.map((o) => (
          <div key={o.clientMessageId} className={`message mine ${o.status}`} data-status={o.status}>
            <div className="text">{o.message}</div>
            <div className="time">
              {o.status === 'failed' ? (
                <>
                  Failed{o.error ? `: ${o.error}` : ''}{' '}
                  <button type="button" onClick={() => room.retry(o.clientMessageId)}>
                    Retry
                  </button>
                </>
              ) : (
                'Sending…'
              )}
            </div>
          </div>
        ))}
      </div>
      <div className="typing" aria-live="polite">
        {typingUsers.length === 1 && `${typingUsers[0]} is typing...`}
        {typingUsers.length > 1 && `${typingUsers.length} people are typing...`}
      </div>
      <form
        className="composer"
        onSubmit={(e) => {
          e.preventDefault();
          send();
        }}
      >
        <textarea
          aria-label="Message"
          placeholder="Type a message..."
          value={draft}
          rows={1}
          onChange={(e) => {
            setDraft(e.target.value);
            room.typing(e.target.value);
          }}
          onKeyDown={onKeyDown}
        />
        <button type="submit" disabled={!draft.trim()}>
          Send
        </button>
      </form>
    </section>
  );
}
