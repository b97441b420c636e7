// The blueprint's hook (Phase 4.1), same options and return value, on a shared client:
// StrictMode and hot reload keep one connection, listeners are attached once per socket,
// every handshake asks for a fresh token, rooms are rejoined from their last `seq`.

import type { Socket } from 'socket.io-client';
import { useCallback, useEffect, useMemo, useRef, useSyncExternalStore } from 'react';

import type { RealtimeClient, ClientSnapshot, TokenReason } from './client';
import { defaultUrl, useRealtimeConfig } from './context';
import { clientKey, obtainClient, setTokenSource, tokenSubject, leaseClient } from './registry';
import type { ConnectionStatus, OutboxItem } from './types';

export interface UseWebSocketOptions {
  url?: string;
  token?: string;
  getToken?: (reason: TokenReason) => string | Promise<string>;
  user?: string;
  reconnection?: boolean;
  reconnectionAttempts?: number;
  reconnectionDelay?: number;
}

export interface UseWebSocketResult {
  connected: boolean;
  connecting: boolean;
  error: string | null;
  status: ConnectionStatus;
  userId: string | null;
  socket: Socket | null;
  client: RealtimeClient | null;
  connect: () => void;
  disconnect: () => void;
  emit: (event: string, data?: unknown, ack?: (res: any) => void) => void;
  on: (event: string, handler: (...args: any[]) => void) => void;
  off: (event: string, handler?: (...args: any[]) => void) => void;
  joinRoom: (roomId: string) => void;
  leaveRoom: (roomId: string) => void;
  sendMessage: (roomId: string, message: string) => OutboxItem | null;
}

const IDLE: ClientSnapshot = {
  status: 'disconnected',
  connected: false,
  connecting: false,
  error: null,
  userId: null,
  connectionId: null,
};
const noSubscribe = () => () => {};
const idle = () => IDLE;

export function useWebSocket(options: UseWebSocketOptions = {}): UseWebSocketResult {
  const config = useRealtimeConfig();
  const url = options.url ?? config.url ?? defaultUrl();
  const token = options.token ?? (options.getToken ? undefined : config.token);
  const getToken = options.getToken ?? (options.token ? undefined : config.getToken);
  const user = options.user ?? config.user ?? tokenSubject(token);
  const enabled = Boolean(token || getToken);
  const key = clientKey(url, user);

  const reconnection = options.reconnection ?? config.reconnection;
  const reconnectionAttempts = options.reconnectionAttempts ?? config.reconnectionAttempts;
  const reconnectionDelay = options.reconnectionDelay ?? config.reconnectionDelay;
  const client = useMemo(() => {
    if (!enabled) return null;
    const extra: Record<string, unknown> = { ...config };
    for (const k of ['url', 'token', 'getToken', 'user']) delete extra[k];
    if (reconnection !== undefined) extra.reconnection = reconnection;
    if (reconnectionAttempts !== undefined) extra.reconnectionAttempts = reconnectionAttempts;
    if (reconnectionDelay !== undefined) extra.reconnectionDelay = reconnectionDelay;
    return obtainClient(key, url, extra);
    // The client is shared per (url, user); later option changes do not rebuild it.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, enabled]);

  // The latest token source, read at each handshake (no stale closure).
  if (client) setTokenSource(key, token, getToken);

  useEffect(() => {
    if (!client) return;
    return leaseClient(key, client);
  }, [key, client]);

  const snap = useSyncExternalStore(client?.subscribe ?? noSubscribe, client?.getSnapshot ?? idle, client?.getSnapshot ?? idle);

  // What this component registered, undone when it unmounts.
  const mine = useRef({ handlers: new Set<[string, (...a: any[]) => void]>(), rooms: new Set<string>() });
  const clientRef = useRef(client);
  clientRef.current = client;
  useEffect(() => {
    if (!client) return;
    const m = mine.current;
    // Re-register after a StrictMode remount (cleanup below ran in between).
    for (const [event, h] of m.handlers) client.on(event, h);
    for (const roomId of m.rooms) client.holdRoom(roomId);
    return () => {
      for (const [event, h] of m.handlers) client.off(event, h);
      for (const roomId of m.rooms) client.releaseRoom(roomId);
    };
  }, [client]);

  const on = useCallback((event: string, handler: (...args: any[]) => void) => {
    const m = mine.current;
    for (const pair of m.handlers) if (pair[0] === event && pair[1] === handler) return;
    m.handlers.add([event, handler]);
    clientRef.current?.on(event, handler);
  }, []);
  const off = useCallback((event: string, handler?: (...args: any[]) => void) => {
    const m = mine.current;
    for (const pair of [...m.handlers]) {
      if (pair[0] === event && (!handler || pair[1] === handler)) {
        m.handlers.delete(pair);
        clientRef.current?.off(event, pair[1]);
      }
    }
  }, []);
  const emit = useCallback((event: string, data?: unknown, ack?: (res: any) => void) => {
    clientRef.current?.emit(event, data, ack);
  }, []);
  const joinRoom = useCallback((roomId: string) => {
    const m = mine.current;
    if (m.rooms.has(roomId)) return;
    m.rooms.add(roomId);
    clientRef.current?.holdRoom(roomId);
  }, []);
  const leaveRoom = useCallback((roomId: string) => {
    const m = mine.current;
    if (!m.rooms.delete(roomId)) return;
    clientRef.current?.releaseRoom(roomId);
  }, []);
  const connect = useCallback(() => clientRef.current?.connect(), []);
  const disconnect = useCallback(() => clientRef.current?.disconnect(), []);
  const sendMessage = useCallback((roomId: string, message: string) => clientRef.current?.send(roomId, message) ?? null, []);

  return {
    connected: snap.connected,
    connecting: snap.connecting,
    error: snap.error,
    status: snap.status,
    userId: snap.userId,
    socket: client?.rawSocket ?? null,
    client,
    connect,
    disconnect,
    emit,
    on,
    off,
    joinRoom,
    leaveRoom,
    sendMessage,
  };
}

/** Subscribes `handler` to `event` once; the latest handler is called (read through a ref). */
export function useSocketEvent(client: RealtimeClient | null, event: string, handler: (...args: any[]) => void) {
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => {
    if (!client) return;
    const h = (...args: unknown[]) => ref.current(...args);
    client.on(event, h);
    return () => client.off(event, h);
  }, [client, event]);
}
