// Shared by the vitest files: a StrictMode wrapper around the provider, unique ids, a second
// user through the official socket.io-client, and a tiny in-process socket.io server for what
// the real gateway cannot be made to do on cue (lose an ack, skip a seq).

import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { StrictMode, type ReactNode } from 'react';

import { Server, type Socket as ServerSocket } from 'socket.io';
import { io, type Socket } from 'socket.io-client';

import { cleanup } from '@testing-library/react';
import { afterAll, afterEach, beforeAll } from 'vitest';

import { RealtimeProvider, type RealtimeConfig } from '../src';
import { removeDb, startGateway, type Gateway } from './gateway';

/**
 * One real gateway for the test file: started before its tests, stopped (its database removed)
 * after them; the DOM is cleaned after each test. Read it only inside tests and hooks.
 */
export function gatewayForFile(): Gateway {
  let current: Gateway | undefined;
  beforeAll(async () => {
    current = await startGateway();
  });
  afterAll(async () => {
    if (current) {
      await current.stop();
      await removeDb(current);
    }
  });
  afterEach(() => cleanup());
  return new Proxy({} as Gateway, {
    get(_, key) {
      if (!current) throw new Error('the gateway is started in beforeAll: use it inside a test');
      const value = Reflect.get(current, key);
      return typeof value === 'function' ? value.bind(current) : value;
    },
  });
}

let n = 0;
export function uid(prefix: string) {
  n += 1;
  return `${prefix}-${process.pid}-${n}-${Math.random().toString(36).slice(2, 7)}`;
}

/** Every hook test renders inside <StrictMode>. */
export function wrapperFor(config: RealtimeConfig) {
  return function Wrapper({ children }: { children?: ReactNode }) {
    return (
      <StrictMode>
        <RealtimeProvider releaseGraceMs={50} {...config}>
          {children}
        </RealtimeProvider>
      </StrictMode>
    );
  };
}

/** Another user, through the official client; `events` records what it receives. */
export async function peer(url: string, token: string): Promise<Socket & { events: [string, any][] }> {
  const s = io(`${url}/ws`, { auth: { token }, transports: ['websocket'], forceNew: true, reconnection: false }) as Socket & {
    events: [string, any][];
  };
  s.events = [];
  s.onAny((event, data) => s.events.push([event, data]));
  await new Promise<void>((res, rej) => {
    s.once('connected', () => res());
    s.once('connect_error', rej);
  });
  return s;
}

/** Resolves with the first `event` matching `pred` (already received or still to come). */
export function nextEvent(s: Socket & { events: [string, any][] }, event: string, pred: (d: any) => boolean = () => true, ms = 8000) {
  return new Promise<any>((res, rej) => {
    const hit = s.events.find(([e, d]) => e === event && pred(d));
    if (hit) return res(hit[1]);
    const timer = setTimeout(() => rej(new Error(`no ${event} within ${ms} ms`)), ms);
    const h = (d: any) => {
      if (!pred(d)) return;
      clearTimeout(timer);
      s.off(event, h);
      res(d);
    };
    s.on(event, h);
  });
}

export interface FakeGateway {
  url: string;
  io: Server;
  http: HttpServer;
  close(): Promise<void>;
}

/** A socket.io server speaking just enough of the contract on `/ws`, driven by `setup`. */
export async function fakeGateway(setup: (socket: ServerSocket) => void): Promise<FakeGateway> {
  const http = createServer();
  const server = new Server(http, { cors: { origin: '*' } });
  server.of('/ws').on('connection', (socket) => {
    socket.emit('connected', { message: 'Connected to WebSocket server', userId: socket.handshake.auth?.token ?? 'u', connectionId: socket.id });
    setup(socket);
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  return {
    url,
    io: server,
    http,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
