import { useState } from 'react';

import { useNotifications } from '../useNotifications';
import { useWebSocket, type UseWebSocketOptions } from '../useWebSocket';
import type { NotificationItem } from '../types';

export interface NotificationBellProps extends UseWebSocketOptions {
  /** The stored unread ones (your backend in front of `GET /api/v1/users/{id}/notifications`). */
  loadUnread?: () => Promise<NotificationItem[]>;
}

/** Unread count, the list, and "Mark read" (the count drops at once, back if the server refuses). */
export function NotificationBell({ loadUnread, ...options }: NotificationBellProps) {
  const { client } = useWebSocket(options);
  const { unread, count, markRead } = useNotifications(client, { loadUnread });
  const [open, setOpen] = useState(false);
  return (
    <div className="bell">
      <button type="button" aria-expanded={open} aria-label={`Notifications (${count} unread)`} onClick={() => setOpen(!open)}>
        <svg aria-hidden="true" width="18" height="18" viewBox="0 0 24 24" fill="currentColor">
          <path d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z" />
        </svg>
        {count > 0 && <span className="badge">{count}</span>}
      </button>
      {open && (
        <ul className="notifications" aria-label="Unread notifications">
          {unread.length === 0 && <li className="muted">No unread notifications</li>}
          {unread.map((n) => (
            <li key={n.id}>
              <strong>{n.title}</strong> <span>{n.message}</span>{' '}
              <button type="button" onClick={() => void markRead(n.id)}>
                Mark read
              </button>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
