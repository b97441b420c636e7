// The demo's sign-in: the gateway in `serve --dev` mints development tokens (tenant `demo`)
// at POST /dev/token. A real app gets its tokens from its own auth server instead.

import type { HistoryLoader, NotificationItem, TokenReason } from '../src';

export interface Session {
  name: string;
  token: string;
  exp: number;
}

export async function devLogin(name: string): Promise<Session> {
  const res = await fetch('/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body?.error?.message ?? `sign-in failed (${res.status}); is the gateway running with --dev?`);
  return { name, token: body.token, exp: body.exp };
}

/** A token source for the hook: the current token while it has a minute left, else a new one. */
export function tokenSource(session: Session) {
  let current = session;
  return async (reason: TokenReason) => {
    if (reason !== 'connect' || current.exp * 1000 - Date.now() < 60_000) current = await devLogin(session.name);
    return current.token;
  };
}

const authed = (token: () => Promise<string>) => async (path: string) => {
  const res = await fetch(path, { headers: { authorization: `Bearer ${await token()}` } });
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return res.json();
};

export function devHistory(token: () => Promise<string>): HistoryLoader {
  const get = authed(token);
  return (roomId, before) =>
    get(`/dev/rooms/${encodeURIComponent(roomId)}/messages?limit=50${before ? `&before=${before}` : ''}`);
}

export function devUnread(token: () => Promise<string>): () => Promise<NotificationItem[]> {
  const get = authed(token);
  return async () => (await get('/dev/notifications')).notifications;
}
