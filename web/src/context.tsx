import { createContext, useContext, type ReactNode } from 'react';

import type { TokenReason } from './client';
import type { ClientConfig } from './registry';

export interface RealtimeConfig extends ClientConfig {
  /** Namespace URL; default: `/ws` of the page's own origin. */
  url?: string;
  /** A token (the blueprint's way); `getToken` wins when both are given. */
  token?: string;
  /** Called for every handshake and before `exp`, so every connect carries a fresh token. */
  getToken?: (reason: TokenReason) => string | Promise<string>;
  /** Who the connection is for; keys the shared connection (default: the token's `sub`). */
  user?: string;
}

const RealtimeContext = createContext<RealtimeConfig>({});

/** Defaults for every `useWebSocket` (and component) below it. */
export function RealtimeProvider({ children, ...config }: RealtimeConfig & { children?: ReactNode }) {
  return <RealtimeContext.Provider value={config}>{children}</RealtimeContext.Provider>;
}

export function useRealtimeConfig(): RealtimeConfig {
  return useContext(RealtimeContext);
}

/** The gateway's namespace URL, computed when first needed (never at import time). */
export function defaultUrl(): string {
  // The blueprint's REACT_APP_WS_URL, where a bundler defines it.
  const proc = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  const env = proc?.env?.REACT_APP_WS_URL;
  if (env) return env;
  if (typeof location !== 'undefined' && /^https?:$/.test(location.protocol)) return new URL('/ws', location.href).toString();
  return 'http://localhost:3000/ws';
}
