import { useEffect, useSyncExternalStore } from 'react';

import type { RealtimeClient } from './client';
import type { PresenceEntry } from './types';

const EMPTY: PresenceEntry[] = [];
const noSubscribe = () => () => {};

/** Who is online in the tenant: `list_online` on every connect, then `user_status`. */
export function usePresence(client: RealtimeClient | null): PresenceEntry[] {
  const online = useSyncExternalStore(client?.subscribe ?? noSubscribe, client?.getPresence ?? (() => EMPTY), () => EMPTY);
  useEffect(() => {
    if (client) void client.loadPresence();
  }, [client]);
  return online;
}
