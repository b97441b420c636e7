// A room as a UI needs it: its messages by `seq` (history or replay on open, older pages on
// demand), the outbox, who is typing, and the typing signals to send (throttled starts, the
// blueprint's 2 s stop).

import { useCallback, useEffect, useRef, useState, useSyncExternalStore } from 'react';

import type { RealtimeClient } from './client';
import type { HistoryLoader, RoomSnapshot } from './types';

/** The blueprint's pause after which typing stops (ms). */
export const TYPING_STOP_MS = 2000;
/** At most one `typing_start` per this interval while the user keeps typing (ms). */
export const TYPING_START_EVERY_MS = 1500;

/** First-page loads in flight, shared by a StrictMode double mount (one request, not two). */
const firstPages = new WeakMap<RealtimeClient, Map<string, Promise<void>>>();

function loadFirstPage(client: RealtimeClient, roomId: string, loader: HistoryLoader): Promise<void> {
  let map = firstPages.get(client);
  if (!map) firstPages.set(client, (map = new Map()));
  let p = map.get(roomId);
  if (!p) {
    p = loader(roomId)
      .then((page) => {
        if (!client.knowsRoom(roomId)) client.addHistory(roomId, page.messages, page.nextBefore);
      })
      .finally(() => map!.delete(roomId));
    map.set(roomId, p);
  }
  return p;
}

const EMPTY: RoomSnapshot = { messages: [], outbox: [], typingUsers: [], joined: false, hasOlder: false };
const noSubscribe = () => () => {};

export interface UseChatRoomResult extends RoomSnapshot {
  send: (message: string) => void;
  retry: (clientMessageId: string) => void;
  /** Call on each keystroke with the input's value. */
  typing: (value: string) => void;
  loadOlder: () => Promise<void>;
  loadingOlder: boolean;
}

export function useChatRoom(
  client: RealtimeClient | null,
  roomId: string | null,
  { loadHistory }: { loadHistory?: HistoryLoader } = {},
): UseChatRoomResult {
  const loaderRef = useRef(loadHistory);
  loaderRef.current = loadHistory;
  const snap = useSyncExternalStore(
    client?.subscribe ?? noSubscribe,
    () => (client && roomId ? client.getRoom(roomId) : EMPTY),
    () => EMPTY,
  );

  useEffect(() => {
    if (!client || !roomId) return;
    let cancelled = false;
    let held = false;
    const hold = () => {
      if (cancelled || held) return;
      held = true;
      client.holdRoom(roomId);
    };
    const loader = loaderRef.current;
    if (loader && !client.knowsRoom(roomId)) {
      // The newest page first, then join from its last seq: nothing between is missed.
      loadFirstPage(client, roomId, loader).then(
        () => hold(),
        () => hold(), // no history: replay from the start instead
      );
    } else {
      hold();
    }
    return () => {
      cancelled = true;
      if (held) client.releaseRoom(roomId);
    };
  }, [client, roomId]);

  const [loadingOlder, setLoadingOlder] = useState(false);
  const loadOlder = useCallback(async () => {
    const loader = loaderRef.current;
    if (!client || !roomId || !loader) return;
    const before = client.olderCursor(roomId);
    if (typeof before !== 'number') return;
    setLoadingOlder(true);
    try {
      const page = await loader(roomId, before);
      client.addHistory(roomId, page.messages, page.nextBefore);
    } finally {
      setLoadingOlder(false);
    }
  }, [client, roomId]);

  // Typing: starts throttled, a stop after TYPING_STOP_MS without a keystroke or when cleared.
  const typingState = useRef({ lastStart: 0, active: false, timer: null as ReturnType<typeof setTimeout> | null });
  const stopTyping = useCallback(() => {
    const t = typingState.current;
    if (t.timer) clearTimeout(t.timer);
    t.timer = null;
    if (t.active && client && roomId) client.emit('message', { type: 'typing_stop', data: { roomId } });
    t.active = false;
    t.lastStart = 0;
  }, [client, roomId]);
  const typing = useCallback(
    (value: string) => {
      if (!client || !roomId) return;
      const t = typingState.current;
      if (!value) return stopTyping();
      const now = Date.now();
      if (!t.active || now - t.lastStart >= TYPING_START_EVERY_MS) {
        if (client.emit('message', { type: 'typing_start', data: { roomId } })) {
          t.active = true;
          t.lastStart = now;
        }
      }
      if (t.timer) clearTimeout(t.timer);
      t.timer = setTimeout(stopTyping, TYPING_STOP_MS);
    },
    [client, roomId, stopTyping],
  );
  useEffect(() => stopTyping, [stopTyping]);

  const send = useCallback(
    (message: string) => {
      if (!client || !roomId || !message.trim()) return;
      stopTyping();
      client.send(roomId, message);
    },
    [client, roomId, stopTyping],
  );
  const retry = useCallback((id: string) => client && roomId && client.retry(roomId, id), [client, roomId]);

  return { ...snap, send, retry, typing, loadOlder, loadingOlder };
}
