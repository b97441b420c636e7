// Wire payloads (docs/PROTOCOL.md §6) and the shapes the hooks hand to components.

/** What a UI needs to say about the connection. */
export type ConnectionStatus = 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'unauthorized';

export interface ChatMessage {
  id: string;
  seq: number;
  roomId: string;
  userId: string;
  userName: string;
  message: string;
  timestamp: string;
}

export type OutboxStatus = 'pending' | 'sending' | 'sent' | 'failed';

/** A message this client sent, until it shows up in the room's log. */
export interface OutboxItem {
  clientMessageId: string;
  roomId: string;
  message: string;
  status: OutboxStatus;
  createdAt: string;
  attempts?: number;
  id?: string;
  seq?: number;
  error?: string;
}

export interface RoomSnapshot {
  /** The room's messages, ascending by `seq`, each once. */
  messages: ChatMessage[];
  outbox: OutboxItem[];
  /** Other users typing now. */
  typingUsers: string[];
  joined: boolean;
  hasOlder: boolean;
}

export interface NotificationItem {
  id: string;
  title: string;
  message: string;
  type: string;
  timestamp: string;
  readAt?: string | null;
}

export interface PresenceEntry {
  userId: string;
  status: string;
  since: string | null;
}

export interface HistoryPage {
  messages: ChatMessage[];
  nextBefore: number | null;
}

/** Loads a page of a room's history (newest first page without `before`). */
export type HistoryLoader = (roomId: string, before?: number) => Promise<HistoryPage>;
