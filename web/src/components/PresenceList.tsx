import { usePresence } from '../usePresence';
import { useWebSocket, type UseWebSocketOptions } from '../useWebSocket';

export interface PresenceListProps extends UseWebSocketOptions {
  /** Only these users, watched with `watch_presence` (for tenants too big for announcements). */
  watch?: string[];
}

/** Who is online in the tenant, including those who were before this page connected. */
export function PresenceList({ watch, ...options }: PresenceListProps) {
  const { client } = useWebSocket(options);
  const online = usePresence(client, { watch });
  return (
    <ul className="presence" aria-label="Online">
      {online.map((p) => (
        <li key={p.userId} data-status={p.status}>
          <span className={`dot ${p.status}`} aria-hidden="true" /> {p.userId}
          {p.status !== 'online' && <span className="muted"> ({p.status})</span>}
        </li>
      ))}
    </ul>
  );
}
