// The clients, one per (url, user), shared by every hook and component that names the same
// pair. Created on first use (never at import time) and dropped when the client tears down.

import { RealtimeClient, type ClientOptions, type TokenReason } from './client';

interface Entry {
  client: RealtimeClient;
  token?: string;
  getToken?: (reason: TokenReason) => string | Promise<string>;
}

const entries = new Map<string, Entry>();

export type ClientConfig = Omit<ClientOptions, 'getToken' | 'url'>;

/** `sub` of a JWT (not verified: it only keys the shared client). */
export function tokenSubject(token: string | undefined): string | undefined {
  if (!token) return undefined;
  try {
    const part = token.split('.')[1] ?? '';
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const sub = JSON.parse(atob(b64 + '==='.slice((b64.length + 3) % 4))).sub;
    return typeof sub === 'string' ? sub : undefined;
  } catch {
    return undefined;
  }
}

export function clientKey(url: string, user: string | undefined): string {
  return `${url}\n${user ?? ''}`;
}

/** The shared client of (url, user), created with `config` when there is none yet. */
export function obtainClient(key: string, url: string, config: ClientConfig): RealtimeClient {
  let e = entries.get(key);
  if (!e) {
    const entry: Entry = { client: undefined as unknown as RealtimeClient };
    entry.client = new RealtimeClient({
      ...config,
      url,
      getToken: (reason) => {
        if (entry.getToken) return entry.getToken(reason);
        if (entry.token) return entry.token;
        throw new Error('No token');
      },
    });
    entries.set(key, (e = entry));
  }
  return e.client;
}

/** Where the shared client of `key` gets its tokens from now on (the latest render wins). */
export function setTokenSource(key: string, token: string | undefined, getToken: Entry['getToken']) {
  const e = entries.get(key);
  if (!e) return;
  e.token = token;
  e.getToken = getToken;
}

/** Acquire the client; returns the release function (which forgets it after teardown). */
export function leaseClient(key: string, client: RealtimeClient): () => void {
  client.acquire();
  return () =>
    client.release(() => {
      if (entries.get(key)?.client === client) entries.delete(key);
    });
}

/** The live client of (url, user), if any. */
export function findClient(url: string, user: string | undefined): RealtimeClient | undefined {
  return entries.get(clientKey(url, user))?.client;
}

/** Every live client (tests use it to check nothing leaks). */
export function liveClients(): RealtimeClient[] {
  return [...entries.values()].map((e) => e.client);
}
