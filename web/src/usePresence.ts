import { useEffect, useMemo, useSyncExternalStore } from 'react';

import type { RealtimeClient } from './client';
import type { PresenceEntry } from './types';

const EMPTY: PresenceEntry[] = [];
const noSubscribe = () => () => {};

/**
 * Who is online in the tenant: `list_online` on every connect, then `user_status`. With
 * `watch` (a big tenant, where presence is announced only to watchers): those users only,
 * through `watch_presence`.
 */
export function usePresence(client: RealtimeClient | null, { watch }: { watch?: string[] } = {}): PresenceEntry[] {
  const all = useSyncExternalStore(client?.subscribe ?? noSubscribe, client?.getPresence ?? (() => EMPTY), () => EMPTY);
  const watchKey = watch ? JSON.stringify([...watch].sort()) : null;
  useEffect(() => {
    if (!client) return;
    if (watchKey === null) void client.loadPresence();
    else void client.watchPresence(JSON.parse(watchKey));
  }, [client, watchKey]);
  return useMemo(() => {
    if (watchKey === null) return all;
    const ids = new Set<string>(JSON.parse(watchKey));
    return all.filter((p) => ids.has(p.userId));
  }, [all, watchKey]);
}
