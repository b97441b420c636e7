import { useCallback, useEffect, useRef, useSyncExternalStore } from 'react';

import type { RealtimeClient } from './client';
import type { NotificationItem } from './types';

const EMPTY: NotificationItem[] = [];
const noSubscribe = () => () => {};

/** Unread notifications: the stored ones (from `loadUnread`, once) and every live one. */
export function useNotifications(
  client: RealtimeClient | null,
  { loadUnread }: { loadUnread?: () => Promise<NotificationItem[]> } = {},
) {
  const loaderRef = useRef(loadUnread);
  loaderRef.current = loadUnread;
  const unread = useSyncExternalStore(client?.subscribe ?? noSubscribe, client?.getNotifications ?? (() => EMPTY), () => EMPTY);
  useEffect(() => {
    const load = loaderRef.current;
    if (!client || !load) return;
    let cancelled = false;
    load().then(
      (list) => !cancelled && client.addNotifications(list),
      (e) => console.warn('loading unread notifications failed', e),
    );
    return () => {
      cancelled = true;
    };
  }, [client]);
  const markRead = useCallback((id: string) => client?.markRead(id) ?? Promise.resolve(false), [client]);
  return { unread, count: unread.length, markRead };
}
