// The outbox and seq tracking. An in-process socket.io server loses an ack on cue and skips a
// seq; the real gateway is restarted while a message waits in the outbox.

import { cleanup, render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, expect, test } from 'vitest';

import { ChatRoom, findClient } from '../src';
import { removeDb, startGateway } from './gateway';
import { fakeGateway, uid, wrapperFor } from './support';

afterEach(() => cleanup());

const texts = () => within(screen.getByRole('log')).queryAllByText(/./, { selector: '.text' }).map((e) => e.textContent);

test('a message whose ack was lost is resent after the reconnect with the same client id, and shown once', async () => {
  const seen: { clientMessageId: string; socket: string }[] = [];
  const joins: unknown[] = [];
  let seq = 0;
  const stored = new Map<string, { id: string; seq: number }>();
  const fake = await fakeGateway((socket) => {
    socket.on('join_room', (d, ack) => {
      joins.push(d);
      socket.join(d.roomId);
      ack?.({ ok: true, roomId: d.roomId });
    });
    socket.on('message', ({ type, data }, ack) => {
      if (type !== 'send_message') return ack?.({ ok: true });
      seen.push({ clientMessageId: data.clientMessageId, socket: socket.id });
      if (seen.length === 1) {
        // Stored, but the connection drops before the ack leaves.
        const m = { id: 'm1', seq: ++seq };
        stored.set(data.clientMessageId, m);
        socket.conn.close();
        return;
      }
      const m = stored.get(data.clientMessageId) ?? { id: `m${seq + 1}`, seq: ++seq };
      stored.set(data.clientMessageId, m);
      ack?.({ ok: true, ...m });
      socket.emit('chat_message', { ...m, roomId: data.roomId, userId: 'alice', userName: 'alice', message: data.message, timestamp: new Date().toISOString() });
    });
  });
  const url = `${fake.url}/ws`;
  const Wrapper = wrapperFor({ url, getToken: () => 'alice', user: 'alice', reconnectionDelay: 100 });
  render(
    <Wrapper>
      <ChatRoom roomId="general" />
    </Wrapper>,
  );
  await waitFor(() => expect(findClient(url, 'alice')?.getRoom('general').joined).toBe(true));
  const user = userEvent.setup();
  await user.type(screen.getByPlaceholderText('Type a message...'), 'exactly once{Enter}');
  await waitFor(() => expect(seen).toHaveLength(2));
  expect(seen[0].clientMessageId).toBe(seen[1].clientMessageId);
  expect(seen[0].socket).not.toBe(seen[1].socket);
  await waitFor(() => expect(texts()).toEqual(['exactly once']));
  await waitFor(() => expect(findClient(url, 'alice')?.getRoom('general').outbox).toEqual([]));
  // The rejoin asked for what came after the last seq it had.
  expect(joins.at(-1)).toEqual({ roomId: 'general', since: 0 });
  await fake.close();
});

test('a gap in seq makes the client join again from the last contiguous seq', async () => {
  const joins: { roomId: string; since: number }[] = [];
  const msg = (seq: number) => ({ id: `m${seq}`, seq, roomId: 'r', userId: 'bot', userName: 'bot', message: `m${seq}`, timestamp: new Date().toISOString() });
  const fake = await fakeGateway((socket) => {
    socket.on('join_room', (d, ack) => {
      joins.push(d);
      ack?.({ ok: true, roomId: d.roomId });
      if (joins.length === 1) {
        socket.emit('chat_message', msg(1));
        socket.emit('chat_message', msg(3)); // seq 2 went missing
      } else {
        socket.emit('chat_message', msg(2)); // the replay brings it
        socket.emit('chat_message', msg(3));
      }
    });
  });
  const url = `${fake.url}/ws`;
  const Wrapper = wrapperFor({ url, getToken: () => 'alice', user: 'alice-gap' });
  render(
    <Wrapper>
      <ChatRoom roomId="r" />
    </Wrapper>,
  );
  await waitFor(() => expect(texts()).toEqual(['m1', 'm2', 'm3']));
  expect(joins).toEqual([
    { roomId: 'r', since: 0 },
    { roomId: 'r', since: 1 },
  ]);
  await fake.close();
});

test('a message written while the gateway is down waits in the outbox, is sent after the restart, and stored once', async () => {
  let gw = await startGateway();
  const tenant = uid('t');
  const alice = uid('alice');
  const url = `${gw.url}/ws`;
  const Wrapper = wrapperFor({ url, getToken: () => gw.token({ sub: alice, tenantId: tenant }), user: alice, reconnectionDelay: 200, reconnectionDelayMax: 500 });
  render(
    <Wrapper>
      <ChatRoom roomId="general" />
    </Wrapper>,
  );
  await waitFor(() => expect(findClient(url, alice)?.getRoom('general').joined).toBe(true));
  const user = userEvent.setup();
  await user.type(screen.getByPlaceholderText('Type a message...'), 'before{Enter}');
  await waitFor(() => expect(texts()).toEqual(['before']));
  // Acked before the outage: shown at once, 'before' is still unanswered for a moment, and a
  // stop then would leave it in the outbox too.
  await waitFor(() => expect(screen.queryByText('Sending…')).toBeNull());
  await gw.stop();
  await screen.findByText(/Disconnected/, undefined, { timeout: 5000 });
  await user.type(screen.getByPlaceholderText('Type a message...'), 'while down{Enter}');
  await waitFor(() => expect(screen.getByText('Sending…')).toBeTruthy());
  gw = await gw.restart();
  await waitFor(() => expect(texts()).toEqual(['before', 'while down']), { timeout: 10_000 });
  await waitFor(() => expect(screen.queryByText('Sending…')).toBeNull());
  const stored = await gw.api(`/rooms/general/messages?tenantId=${tenant}`);
  expect(stored.messages.map((m: { message: string }) => m.message)).toEqual(['before', 'while down']);
  cleanup();
  await gw.stop();
  await removeDb(gw);
});
