// One realtime connection, outside React: the socket, its status, its rooms (tracked by `seq`),
// its outbox, and the event handlers of every component that uses it. Components read it
// through `useSyncExternalStore`; `acquire`/`release` count its users, and the last release
// tears it down only after a grace period, so StrictMode's double mount and hot reload keep
// the same connection. Nothing here touches `window` at import time.

import { io, type Socket } from 'socket.io-client';

import type {
  ChatMessage,
  ConnectionStatus,
  NotificationItem,
  OutboxItem,
  PresenceEntry,
  RoomSnapshot,
} from './types';

export type TokenReason = 'connect' | 'retry' | 'refresh';

export interface ClientOptions {
  /** The namespace URL, e.g. `https://rt.example.com/ws`. */
  url: string;
  /** Called for every handshake and refresh; `retry` after the server refused the last token. */
  getToken: (reason: TokenReason) => string | Promise<string>;
  reconnection?: boolean;
  reconnectionAttempts?: number;
  reconnectionDelay?: number;
  reconnectionDelayMax?: number;
  /** How long the socket must be down before the status says `reconnecting` (ms). */
  reconnectingAfterMs?: number;
  /** Refresh the token this long before its `exp` (ms). */
  refreshBeforeExpMs?: number;
  /** Acknowledgement deadline of a sent message (ms); then it is shown as failed. */
  ackTimeoutMs?: number;
  /** Teardown delay after the last user released the client (ms). */
  releaseGraceMs?: number;
  /** A peer's typing indicator that was never cleared expires after this long (ms). */
  typingExpiryMs?: number;
  transports?: ('websocket' | 'polling')[];
}

export interface ClientSnapshot {
  status: ConnectionStatus;
  connected: boolean;
  connecting: boolean;
  error: string | null;
  userId: string | null;
  connectionId: string | null;
}

type Handler = (...args: any[]) => void;

interface RoomState {
  holders: number;
  joined: boolean;
  /** A join (or rejoin) is in flight: its replay may arrive out of live order. */
  joining: boolean;
  /** The server said the last replay was truncated: continue after its ack. */
  truncated: boolean;
  /** Everything up to this `seq` has been received (null: nothing known yet). */
  safeSeq: number | null;
  messages: ChatMessage[];
  ids: Set<string>;
  outbox: OutboxItem[];
  typing: Map<string, number>;
  olderCursor: number | null | undefined;
  leaveTimer: ReturnType<typeof setTimeout> | null;
  snapshot: RoomSnapshot;
}

/** Messages kept per room; the oldest are dropped beyond it. */
const MAX_ROOM_MESSAGES = 10_000;
/** A typing indicator a peer never cleared expires after this long (ms). */
export const TYPING_EXPIRY_MS = 6_000;
const AUTH_ERRORS = new Set(['Token expired', 'Invalid token', 'No token provided']);

/** `exp` of a JWT, in seconds, without verifying it (the server does). */
export function tokenExp(token: string): number | null {
  try {
    const part = token.split('.')[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = JSON.parse(decodeURIComponent(escape(atob(b64 + '==='.slice((b64.length + 3) % 4)))));
    return typeof json.exp === 'number' ? json.exp : null;
  } catch {
    return null;
  }
}

let idCounter = 0;
function clientId(): string {
  idCounter += 1;
  const rnd = globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  return `${rnd}-${idCounter}`;
}

function emptyRoom(): RoomState {
  const r: RoomState = {
    holders: 0,
    joined: false,
    joining: false,
    truncated: false,
    safeSeq: null,
    messages: [],
    ids: new Set(),
    outbox: [],
    typing: new Map(),
    olderCursor: undefined,
    leaveTimer: null,
    snapshot: { messages: [], outbox: [], typingUsers: [], joined: false, hasOlder: false },
  };
  return r;
}

export class RealtimeClient {
  readonly options: Required<Omit<ClientOptions, 'transports'>> & { transports?: ClientOptions['transports'] };
  private socket: Socket | null = null;
  private users = 0;
  private teardownTimer: ReturnType<typeof setTimeout> | null = null;
  private reconnectingTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private authRetried = false;
  private nextTokenReason: TokenReason = 'connect';
  private tokenExpired = false;
  private everConnected = false;
  private stopped = true;
  private snap: ClientSnapshot = {
    status: 'disconnected',
    connected: false,
    connecting: false,
    error: null,
    userId: null,
    connectionId: null,
  };
  private listeners = new Set<() => void>();
  private handlers = new Map<string, Set<Handler>>();
  private attached = new Set<string>();
  private rooms = new Map<string, RoomState>();
  private notifications: NotificationItem[] = [];
  private notificationIds = new Set<string>();
  private notificationsSnap: NotificationItem[] = [];
  private presence = new Map<string, PresenceEntry>();
  private presenceSnap: PresenceEntry[] = [];
  private presenceLoaded = false;
  private typingSweep: ReturnType<typeof setInterval> | null = null;

  constructor(options: ClientOptions) {
    this.options = {
      reconnection: true,
      reconnectionAttempts: Infinity,
      reconnectionDelay: 1000,
      reconnectionDelayMax: 5000,
      reconnectingAfterMs: 1000,
      refreshBeforeExpMs: 60_000,
      ackTimeoutMs: 10_000,
      releaseGraceMs: 1000,
      typingExpiryMs: TYPING_EXPIRY_MS,
      ...options,
    };
  }

  // ---- store protocol -------------------------------------------------------------------

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  getSnapshot = (): ClientSnapshot => this.snap;

  private notify() {
    for (const fn of [...this.listeners]) fn();
  }

  private set(patch: Partial<ClientSnapshot>) {
    const next = { ...this.snap, ...patch };
    next.connected = next.status === 'connected';
    next.connecting = next.status === 'connecting' || next.status === 'reconnecting';
    const same = (Object.keys(next) as (keyof ClientSnapshot)[]).every((k) => next[k] === this.snap[k]);
    if (same) return;
    this.snap = next;
    this.notify();
  }

  /** One more user; connects on the first. */
  acquire() {
    this.users += 1;
    if (this.teardownTimer) {
      clearTimeout(this.teardownTimer);
      this.teardownTimer = null;
    }
    if (this.users === 1 && this.stopped) this.connect();
  }

  /** One user fewer; the last one tears the connection down after the grace period. */
  release(onTeardown?: () => void) {
    this.users = Math.max(0, this.users - 1);
    if (this.users > 0 || this.teardownTimer) return;
    this.teardownTimer = setTimeout(() => {
      this.teardownTimer = null;
      if (this.users === 0) {
        this.disconnect();
        onTeardown?.();
      }
    }, this.options.releaseGraceMs);
  }

  // ---- connection -----------------------------------------------------------------------

  /** The live socket.io socket (for what this client does not wrap). */
  get rawSocket(): Socket | null {
    return this.socket;
  }

  connect() {
    this.stopped = false;
    this.authRetried = false;
    if (!this.socket) this.socket = this.createSocket();
    if (this.socket.connected) return;
    this.set({ status: this.everConnected ? 'reconnecting' : 'connecting', error: null });
    this.socket.connect();
  }

  disconnect() {
    this.stopped = true;
    this.clearTimers();
    const s = this.socket;
    this.socket = null;
    this.attached.clear();
    if (s) {
      s.removeAllListeners();
      s.io.removeAllListeners?.();
      s.disconnect();
    }
    for (const room of this.rooms.values()) {
      room.joined = false;
      room.joining = false;
    }
    this.set({ status: 'disconnected', error: null, connectionId: null });
  }

  private clearTimers() {
    for (const t of [this.reconnectingTimer, this.retryTimer, this.refreshTimer]) if (t) clearTimeout(t);
    this.reconnectingTimer = this.retryTimer = this.refreshTimer = null;
    if (this.typingSweep) clearInterval(this.typingSweep);
    this.typingSweep = null;
  }

  private createSocket(): Socket {
    const o = this.options;
    const socket = io(o.url, {
      autoConnect: false,
      forceNew: true,
      reconnection: o.reconnection,
      reconnectionAttempts: o.reconnectionAttempts,
      reconnectionDelay: o.reconnectionDelay,
      reconnectionDelayMax: o.reconnectionDelayMax,
      transports: o.transports ?? ['websocket', 'polling'],
      // A function: every handshake (first connect, each reconnect) asks for a current token.
      auth: (cb) => {
        const reason = this.nextTokenReason;
        this.nextTokenReason = 'connect';
        Promise.resolve()
          .then(() => o.getToken(reason))
          .then(
            (token) => {
              this.noteToken(token);
              cb({ token });
            },
            (err) => {
              this.set({ status: 'unauthorized', error: String(err?.message ?? err) });
              cb({});
            },
          );
      },
    });
    socket.on('connect', () => this.onConnect());
    socket.on('disconnect', (reason) => this.onDisconnect(reason));
    socket.on('connect_error', (err) => this.onConnectError(err));
    socket.io.on('reconnect_failed', () => this.set({ status: 'disconnected', error: 'Reconnection failed' }));
    socket.on('connected', (d: { userId?: string; connectionId?: string }) => {
      this.set({ userId: d?.userId ?? null, connectionId: d?.connectionId ?? null });
    });
    socket.on('error', (e: { code?: string; message?: string }) => {
      if (e?.code === 'TOKEN_EXPIRED') this.tokenExpired = true;
    });
    socket.on('chat_message', (m: ChatMessage) => this.onChatMessage(m));
    socket.on('joined_room', (d: { roomId: string; truncated?: boolean }) => {
      const room = this.rooms.get(d?.roomId);
      if (room && d.truncated) room.truncated = true;
    });
    socket.on('user_typing', (d: { userId: string; roomId: string; typing: boolean }) => this.onTyping(d));
    socket.on('notification', (n: NotificationItem) => this.onNotification(n));
    socket.on('notification_read', (d: { notificationId: string }) => this.dropNotification(d?.notificationId));
    socket.on('user_status', (d: { userId: string; status: string; timestamp: string }) => this.onUserStatus(d));
    socket.on('token_refreshed', () => this.scheduleRefresh());
    // Events with handlers registered before this socket existed.
    for (const event of this.handlers.keys()) this.attach(socket, event);
    return socket;
  }

  private onConnect() {
    this.everConnected = true;
    this.authRetried = false;
    this.tokenExpired = false;
    if (this.reconnectingTimer) clearTimeout(this.reconnectingTimer);
    this.reconnectingTimer = null;
    this.set({ status: 'connected', error: null });
    this.scheduleRefresh();
    if (!this.typingSweep) this.typingSweep = setInterval(() => this.sweepTyping(), Math.min(1000, this.options.typingExpiryMs / 4));
    for (const [roomId, room] of this.rooms) {
      room.joined = false;
      room.joining = false;
      if (room.holders > 0 || room.leaveTimer) this.sendJoin(roomId, room);
    }
    if (this.presenceLoaded) void this.loadPresence();
    if (this.watched.size) void this.watchPresence([...this.watched]);
  }

  private onDisconnect(reason: string) {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    for (const room of this.rooms.values()) {
      room.joined = false;
      room.joining = false;
      // In flight when the connection dropped: sent again (same client id) after the rejoin.
      for (const item of room.outbox) if (item.status === 'sending') item.status = 'pending';
      this.publishRoom(room);
    }
    if (this.stopped) return;
    if (reason === 'io server disconnect') {
      // The server ended the session. After a token expiry: one reconnect with a fresh token.
      if (this.tokenExpired && !this.authRetried) {
        this.authRetried = true;
        this.nextTokenReason = 'retry';
        this.set({ status: 'connecting', error: 'Token expired' });
        this.socket?.connect();
        return;
      }
      this.set({ status: this.tokenExpired ? 'unauthorized' : 'disconnected', error: this.tokenExpired ? 'Token expired' : 'Disconnected by the server' });
      return;
    }
    // The client reconnects by itself; say "reconnecting" only if it takes a moment.
    this.set({ status: 'connecting' });
    this.armReconnecting();
  }

  private armReconnecting() {
    if (this.reconnectingTimer) return;
    this.reconnectingTimer = setTimeout(() => {
      this.reconnectingTimer = null;
      if (this.snap.status === 'connecting') this.set({ status: 'reconnecting' });
    }, this.options.reconnectingAfterMs);
  }

  private onConnectError(err: Error & { data?: unknown }) {
    if (this.stopped || this.snap.status === 'unauthorized') return;
    const message = err?.message ?? String(err);
    const refused = this.socket && !this.socket.active; // a server refusal: no automatic retry
    if (AUTH_ERRORS.has(message)) {
      if (!this.authRetried) {
        // One fresh token and one more try; a second refusal is final.
        this.authRetried = true;
        this.nextTokenReason = 'retry';
        this.socket?.connect();
        return;
      }
      this.set({ status: 'unauthorized', error: message });
      return;
    }
    if (refused) {
      // e.g. "Too many connections": try again later, with the socket's own backoff delay.
      this.set({ status: 'connecting', error: message });
      this.armReconnecting();
      if (this.retryTimer) clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        if (!this.stopped) this.socket?.connect();
      }, this.options.reconnectionDelayMax);
      return;
    }
    this.set({ status: this.snap.status === 'reconnecting' ? 'reconnecting' : 'connecting', error: message });
    this.armReconnecting();
  }

  private scheduleRefresh() {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    // The exp of the token last handed to the server is the one in force.
    const exp = this.lastExp;
    if (exp === null) return;
    const wait = Math.max(0, exp * 1000 - Date.now() - this.options.refreshBeforeExpMs);
    // setTimeout's limit is 2^31-1 ms; a later refresh is re-armed when it fires.
    this.refreshTimer = setTimeout(() => void this.refresh(), Math.min(wait, 2 ** 31 - 1));
  }

  private lastExp: number | null = null;

  /** Sends `refresh_token` with a fresh token; resolves true when the server took it. */
  async refresh(): Promise<boolean> {
    const socket = this.socket;
    if (!socket?.connected) return false;
    try {
      const token = await this.options.getToken('refresh');
      this.lastExp = tokenExp(token);
      const res = await socket.timeout(this.options.ackTimeoutMs).emitWithAck('refresh_token', { token });
      if (res?.ok) {
        this.scheduleRefresh();
        return true;
      }
    } catch {
      // A timeout or a refused token: the expiry path (one reconnect with a fresh token) applies.
    }
    return false;
  }

  // ---- generic events (the blueprint's on/off/emit) ------------------------------------

  on(event: string, handler: Handler) {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(handler);
    if (this.socket) this.attach(this.socket, event);
  }

  off(event: string, handler?: Handler) {
    const set = this.handlers.get(event);
    if (!set) return;
    if (handler) set.delete(handler);
    else set.clear();
  }

  /** One socket listener per event for the socket's life; it calls the current handlers. */
  private attach(socket: Socket, event: string) {
    if (this.attached.has(event)) return;
    this.attached.add(event);
    // chat_message goes through the room log first (dedupe), see onChatMessage.
    if (event === 'chat_message') return;
    socket.on(event, (...args: unknown[]) => this.dispatch(event, args));
  }

  private dispatch(event: string, args: unknown[]) {
    const set = this.handlers.get(event);
    if (!set) return;
    for (const h of [...set]) {
      try {
        h(...args);
      } catch (e) {
        console.error(`handler of ${event} failed`, e);
      }
    }
  }

  emit(event: string, data?: unknown, ack?: (res: any) => void): boolean {
    const socket = this.socket;
    if (!socket?.connected) return false;
    if (ack) socket.emit(event, data, ack);
    else socket.emit(event, data);
    return true;
  }

  // ---- rooms ----------------------------------------------------------------------------

  private room(roomId: string): RoomState {
    let r = this.rooms.get(roomId);
    if (!r) this.rooms.set(roomId, (r = emptyRoom()));
    return r;
  }

  /** Holds a room: joined now or after the next connect, and rejoined with `since` ever after. */
  holdRoom(roomId: string) {
    const room = this.room(roomId);
    room.holders += 1;
    if (room.leaveTimer) {
      clearTimeout(room.leaveTimer);
      room.leaveTimer = null;
      return;
    }
    if (room.holders === 1 && this.socket?.connected && !room.joined && !room.joining) this.sendJoin(roomId, room);
  }

  /** Lets go of a room; the last holder leaves it after the grace period. */
  releaseRoom(roomId: string) {
    const room = this.rooms.get(roomId);
    if (!room || room.holders === 0) return;
    room.holders -= 1;
    if (room.holders > 0) return;
    room.leaveTimer = setTimeout(() => {
      room.leaveTimer = null;
      if (room.holders > 0) return;
      if (room.joined || room.joining) this.emit('leave_room', { roomId });
      room.joined = false;
      room.joining = false;
      this.publishRoom(room);
    }, this.options.releaseGraceMs);
  }

  private sendJoin(roomId: string, room: RoomState) {
    const socket = this.socket;
    if (!socket?.connected) return;
    room.joining = true;
    room.truncated = false;
    const since = room.safeSeq ?? 0;
    socket.timeout(this.options.ackTimeoutMs).emit('join_room', { roomId, since }, (err: unknown, res: any) => {
      if (socket !== this.socket || !socket.connected) return;
      room.joining = false;
      if (err || !res?.ok) {
        this.publishRoom(room);
        return;
      }
      room.joined = true;
      // The replay is complete: the server sent everything up to here.
      const max = room.messages.length ? room.messages[room.messages.length - 1].seq : since;
      room.safeSeq = Math.max(room.safeSeq ?? 0, max, since);
      if (room.olderCursor === undefined) room.olderCursor = null;
      if (room.truncated) {
        this.sendJoin(roomId, room);
        return;
      }
      this.publishRoom(room);
      this.flushOutbox(roomId, room);
    });
  }

  private onChatMessage(m: ChatMessage) {
    if (!m || typeof m.id !== 'string' || typeof m.seq !== 'number') return;
    const room = this.room(m.roomId);
    if (!this.insert(room, m)) return; // a duplicate (replay of what was live, or a resend)
    if (room.safeSeq !== null) {
      if (m.seq === room.safeSeq + 1) {
        room.safeSeq = m.seq;
        this.advanceSafe(room);
      } else if (m.seq > room.safeSeq + 1 && room.joined && !room.joining) {
        // A gap: something was missed. Join again from the last contiguous seq.
        this.sendJoin(m.roomId, room);
      }
    }
    // The sender's outbox entry is done once its message is in the log.
    room.outbox = room.outbox.filter((o) => o.id !== m.id);
    this.publishRoom(room);
    this.dispatch('chat_message', [m]);
  }

  /** Inserts by seq; false for a message already in the log. */
  private insert(room: RoomState, m: ChatMessage): boolean {
    if (room.ids.has(m.id)) return false;
    room.ids.add(m.id);
    const list = room.messages;
    if (!list.length || list[list.length - 1].seq < m.seq) list.push(m);
    else {
      let i = list.length - 1;
      while (i >= 0 && list[i].seq > m.seq) i--;
      if (i >= 0 && list[i].seq === m.seq) return false;
      list.splice(i + 1, 0, m);
    }
    if (list.length > MAX_ROOM_MESSAGES) {
      const dropped = list.splice(0, list.length - MAX_ROOM_MESSAGES);
      for (const d of dropped) room.ids.delete(d.id);
      room.olderCursor = list[0]?.seq ?? null;
    }
    return true;
  }

  private advanceSafe(room: RoomState) {
    const list = room.messages;
    // Messages above the watermark that arrived early (replay out of live order).
    let idx = list.findIndex((x) => x.seq > (room.safeSeq ?? 0));
    while (idx >= 0 && idx < list.length && list[idx].seq === (room.safeSeq ?? 0) + 1) {
      room.safeSeq = list[idx].seq;
      idx++;
    }
  }

  /**
   * Seeds a room with a page of history (newest page first, then older ones as the user
   * scrolls). The first page also sets where the next join continues from.
   */
  addHistory(roomId: string, messages: ChatMessage[], nextBefore: number | null) {
    const room = this.room(roomId);
    for (const m of messages) this.insert(room, m);
    if (room.safeSeq === null && messages.length) room.safeSeq = messages[messages.length - 1].seq;
    if (room.safeSeq === null) room.safeSeq = 0;
    room.olderCursor = nextBefore;
    this.publishRoom(room);
  }

  /** Where older history continues (`before`), null when there is none, undefined unknown. */
  olderCursor(roomId: string): number | null | undefined {
    return this.rooms.get(roomId)?.olderCursor;
  }

  /** True when the room has been opened in this client's life (history or joins). */
  knowsRoom(roomId: string): boolean {
    return (this.rooms.get(roomId)?.safeSeq ?? null) !== null;
  }

  subscribeRoom = (fn: () => void) => this.subscribe(fn);

  getRoom(roomId: string): RoomSnapshot {
    return this.room(roomId).snapshot;
  }

  private publishRoom(room: RoomState) {
    const now = Date.now();
    room.snapshot = {
      messages: room.messages.slice(),
      outbox: room.outbox.map((o) => ({ ...o })),
      typingUsers: [...room.typing].filter(([, until]) => until > now).map(([u]) => u),
      joined: room.joined,
      hasOlder: typeof room.olderCursor === 'number',
    };
    this.notify();
  }

  // ---- outbox ---------------------------------------------------------------------------

  /**
   * Sends a chat message through the outbox: shown at once as pending, acknowledged or failed
   * (retry with `retry`). Unacknowledged messages are sent again after a reconnect with the
   * same client message id, so the server stores them once.
   */
  send(roomId: string, message: string): OutboxItem {
    const room = this.room(roomId);
    const item: OutboxItem = {
      clientMessageId: clientId(),
      roomId,
      message,
      status: 'pending',
      createdAt: new Date().toISOString(),
    };
    room.outbox.push(item);
    this.publishRoom(room);
    if (room.joined) this.transmit(room, item);
    return item;
  }

  retry(roomId: string, clientMessageId: string) {
    const room = this.rooms.get(roomId);
    const item = room?.outbox.find((o) => o.clientMessageId === clientMessageId);
    if (!room || !item || item.status !== 'failed') return;
    item.status = 'pending';
    item.error = undefined;
    this.publishRoom(room);
    if (room.joined) this.transmit(room, item);
  }

  discard(roomId: string, clientMessageId: string) {
    const room = this.rooms.get(roomId);
    if (!room) return;
    room.outbox = room.outbox.filter((o) => o.clientMessageId !== clientMessageId);
    this.publishRoom(room);
  }

  private flushOutbox(_roomId: string, room: RoomState) {
    for (const item of room.outbox) if (item.status === 'pending') this.transmit(room, item);
  }

  private transmit(room: RoomState, item: OutboxItem) {
    const socket = this.socket;
    if (!socket?.connected) return;
    item.status = 'sending';
    const attempt = (item.attempts = (item.attempts ?? 0) + 1);
    this.publishRoom(room);
    socket
      .timeout(this.options.ackTimeoutMs)
      .emit(
        'message',
        { type: 'send_message', data: { roomId: item.roomId, message: item.message, clientMessageId: item.clientMessageId } },
        (err: unknown, res: any) => {
          const current = room.outbox.find((o) => o.clientMessageId === item.clientMessageId);
          if (!current || current.attempts !== attempt || current.status !== 'sending') return;
          if (err) {
            // No ack in time. Still connected: show it failed; otherwise the reconnect resends.
            current.status = socket.connected ? 'failed' : 'pending';
            current.error = socket.connected ? 'No acknowledgement' : undefined;
          } else if (res?.ok) {
            current.status = 'sent';
            current.id = res.id;
            current.seq = res.seq;
            if (room.ids.has(res.id)) room.outbox = room.outbox.filter((o) => o !== current);
          } else {
            current.status = 'failed';
            current.error = res?.error?.message ?? 'Failed';
          }
          this.publishRoom(room);
        },
      );
  }

  // ---- typing ---------------------------------------------------------------------------

  private onTyping(d: { userId: string; roomId: string; typing: boolean }) {
    if (!d || d.userId === this.snap.userId) return;
    const room = this.room(d.roomId);
    if (d.typing) room.typing.set(d.userId, Date.now() + this.options.typingExpiryMs);
    else room.typing.delete(d.userId);
    this.publishRoom(room);
  }

  /** Expires indicators whose `typing: false` never came (the peer's tab closed). */
  private sweepTyping() {
    const now = Date.now();
    for (const room of this.rooms.values()) {
      let changed = false;
      for (const [u, until] of room.typing) {
        if (until <= now) {
          room.typing.delete(u);
          changed = true;
        }
      }
      if (changed) this.publishRoom(room);
    }
  }

  // ---- notifications --------------------------------------------------------------------

  getNotifications = (): NotificationItem[] => this.notificationsSnap;

  addNotifications(list: NotificationItem[]) {
    for (const n of list) this.onNotification(n, false);
    this.publishNotifications();
  }

  private onNotification(n: NotificationItem, publish = true) {
    if (!n || typeof n.id !== 'string' || this.notificationIds.has(n.id) || n.readAt) return;
    this.notificationIds.add(n.id);
    this.notifications.unshift(n);
    if (publish) this.publishNotifications();
  }

  private dropNotification(id: string | undefined) {
    if (!id) return;
    const before = this.notifications.length;
    this.notifications = this.notifications.filter((n) => n.id !== id);
    if (this.notifications.length !== before) this.publishNotifications();
  }

  /** Marks a notification read: removed from the unread list at once, put back on failure. */
  async markRead(id: string): Promise<boolean> {
    const item = this.notifications.find((n) => n.id === id);
    this.dropNotification(id);
    const socket = this.socket;
    try {
      if (!socket?.connected) throw new Error('Disconnected');
      const res = await socket
        .timeout(this.options.ackTimeoutMs)
        .emitWithAck('message', { type: 'mark_notification_read', data: { notificationId: id } });
      if (res?.ok) return true;
      if (res?.error?.code === 'NOT_FOUND') return false;
      throw new Error(res?.error?.message ?? 'Failed');
    } catch {
      if (item && !this.notifications.some((n) => n.id === id)) {
        this.notifications.unshift(item);
        this.publishNotifications();
      }
      return false;
    }
  }

  private publishNotifications() {
    this.notificationsSnap = this.notifications.slice();
    this.notify();
  }

  // ---- presence -------------------------------------------------------------------------

  getPresence = (): PresenceEntry[] => this.presenceSnap;

  /** Asks who is online now (`list_online`), then follows `user_status`. */
  async loadPresence(): Promise<void> {
    this.presenceLoaded = true;
    const socket = this.socket;
    if (!socket?.connected) return;
    try {
      const res = await socket.timeout(this.options.ackTimeoutMs).emitWithAck('list_online', {});
      if (!res?.ok || typeof res.users !== 'object' || res.users === null) return;
      // The answer replaces what we had: announcements missed while disconnected are stale.
      const next = new Map<string, PresenceEntry>();
      for (const [userId, v] of Object.entries(res.users as Record<string, { status: string; since?: string }>)) {
        if (v?.status && v.status !== 'offline') next.set(userId, { userId, status: v.status, since: v.since ?? null });
      }
      this.presence = next;
      this.publishPresence();
    } catch {
      // No answer: the announcements still keep the list current.
    }
  }

  /**
   * Big tenants (above the server's PRESENCE_BROADCAST_MAX) announce presence only to sockets
   * that watch the user: `watch_presence` these users (again on every connect), and list them.
   */
  async watchPresence(userIds: string[]): Promise<void> {
    const next = [...new Set(userIds)];
    const dropped = [...this.watched].filter((u) => !next.includes(u));
    this.watched = new Set(next);
    const socket = this.socket;
    if (!socket?.connected) return;
    try {
      if (dropped.length) socket.emit('unwatch_presence', { userIds: dropped });
      if (!next.length) return;
      const res = await socket.timeout(this.options.ackTimeoutMs).emitWithAck('watch_presence', { userIds: next });
      if (!res?.ok || typeof res.users !== 'object' || res.users === null) return;
      for (const u of next) {
        const v = (res.users as Record<string, { status: string; since?: string }>)[u];
        if (v?.status && v.status !== 'offline') this.presence.set(u, { userId: u, status: v.status, since: v.since ?? null });
        else this.presence.delete(u);
      }
      this.publishPresence();
    } catch {
      // No answer: announcements for the watched users still arrive.
    }
  }

  private watched = new Set<string>();

  private onUserStatus(d: { userId: string; status: string; timestamp: string }) {
    if (!d?.userId) return;
    if (d.status === 'offline') this.presence.delete(d.userId);
    else this.presence.set(d.userId, { userId: d.userId, status: d.status, since: d.timestamp ?? null });
    this.publishPresence();
  }

  private publishPresence() {
    this.presenceSnap = [...this.presence.values()].sort((a, b) => a.userId.localeCompare(b.userId));
    this.notify();
  }

  /** Called when the token handed to the server changes (to arm the refresh timer). */
  noteToken(token: string) {
    this.lastExp = tokenExp(token);
  }
}
