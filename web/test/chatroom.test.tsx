// The package's ChatRoom against the real gateway, inside <StrictMode>: bursts, history pages,
// Enter / Shift+Enter, typing sent (throttled, stopped after 2 s) and expired on receipt.

import { fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { expect, test } from 'vitest';

import { ChatRoom, findClient, type HistoryLoader } from '../src';
import { nextEvent, peer, uid, wrapperFor, gatewayForFile } from './support';

const gw = gatewayForFile();

async function openRoom(opts: { loadHistory?: HistoryLoader; typingExpiryMs?: number } = {}) {
  const tenant = uid('t');
  const room = uid('room');
  const alice = uid('alice');
  const url = `${gw.url}/ws`;
  const token = gw.token({ sub: alice, tenantId: tenant });
  const Wrapper = wrapperFor({ url, getToken: () => token, user: alice, typingExpiryMs: opts.typingExpiryMs });
  return { tenant, room, alice, url, Wrapper };
}

const joined = (url: string, user: string, room: string) =>
  waitFor(() => expect(findClient(url, user)?.getRoom(room).joined).toBe(true));

const texts = () => within(screen.getByRole('log')).queryAllByText(/./, { selector: '.text' }).map((e) => e.textContent);

test('a burst of 100 messages in one tick is rendered, each once, in seq order', async () => {
  const { tenant, room, alice, url, Wrapper } = await openRoom();
  render(
    <Wrapper>
      <ChatRoom roomId={room} />
    </Wrapper>,
  );
  await joined(url, alice, room);
  const sent = Array.from({ length: 100 }, (_, i) => `burst ${i}`);
  const acks = await Promise.all(sent.map((message) => gw.api(`/rooms/${room}/messages`, { body: { tenantId: tenant, userId: 'bot', message } })));
  const bySeq = acks.sort((a, b) => a.seq - b.seq).map((m) => m.message);
  await waitFor(() => expect(texts()).toHaveLength(100));
  expect(texts()).toEqual(bySeq);
});

test('opens on the newest history page, then loads older pages on scroll', async () => {
  const { tenant, room, alice, url, Wrapper } = await openRoom();
  for (let i = 1; i <= 45; i++) await gw.api(`/rooms/${room}/messages`, { body: { tenantId: tenant, userId: 'bot', message: `old ${i}` } });
  const calls: (number | undefined)[] = [];
  const loadHistory: HistoryLoader = async (roomId, before) => {
    calls.push(before);
    return gw.api(`/rooms/${roomId}/messages?tenantId=${tenant}&limit=20${before ? `&before=${before}` : ''}`);
  };
  render(
    <Wrapper>
      <ChatRoom roomId={room} loadHistory={loadHistory} />
    </Wrapper>,
  );
  await waitFor(() => expect(texts()).toHaveLength(20));
  expect(texts()[0]).toBe('old 26');
  await joined(url, alice, room);
  // Live messages continue right after the page, with nothing replayed twice.
  await gw.api(`/rooms/${room}/messages`, { body: { tenantId: tenant, userId: 'bot', message: 'live' } });
  await waitFor(() => expect(texts().at(-1)).toBe('live'));
  const log = screen.getByRole('log');
  log.scrollTop = 0;
  fireEvent.scroll(log);
  await waitFor(() => expect(texts()).toHaveLength(41));
  fireEvent.scroll(log);
  await waitFor(() => expect(texts()).toHaveLength(46));
  expect(texts()).toEqual([...Array.from({ length: 45 }, (_, i) => `old ${i + 1}`), 'live']);
  fireEvent.scroll(log);
  expect(calls.filter((c) => c === undefined)).toHaveLength(1);
  expect(calls.length).toBe(3); // no more pages to ask for
});

test('Enter sends, Shift+Enter makes a new line; the message shows pending, then sent', async () => {
  const { tenant, room, alice, url, Wrapper } = await openRoom();
  render(
    <Wrapper>
      <ChatRoom roomId={room} />
    </Wrapper>,
  );
  await joined(url, alice, room);
  const user = userEvent.setup();
  const input = screen.getByPlaceholderText('Type a message...') as HTMLTextAreaElement;
  await user.type(input, 'line one{Shift>}{Enter}{/Shift}line two');
  expect(input.value).toBe('line one\nline two');
  await user.keyboard('{Enter}');
  expect(input.value).toBe('');
  await waitFor(() => expect(texts()).toEqual(['line one\nline two']));
  const stored = await gw.api(`/rooms/${room}/messages?tenantId=${tenant}`);
  expect(stored.messages.map((m: { message: string }) => m.message)).toEqual(['line one\nline two']);
  await user.click(screen.getByRole('button', { name: 'Send' })); // empty: nothing sent
  expect(texts()).toHaveLength(1);
});

test('typing: one throttled start for a burst of keys, a stop after the 2 s pause; a start never stopped expires', async () => {
  const { tenant, room, alice, url, Wrapper } = await openRoom({ typingExpiryMs: 1200 });
  render(
    <Wrapper>
      <ChatRoom roomId={room} />
    </Wrapper>,
  );
  const bob = await peer(gw.url, gw.token({ sub: uid('bob'), tenantId: tenant }));
  await bob.timeout(5000).emitWithAck('join_room', { roomId: room });
  await joined(url, alice, room);
  const user = userEvent.setup();
  await user.type(screen.getByPlaceholderText('Type a message...'), 'abcdef');
  await nextEvent(bob, 'user_typing', (d) => d.userId === alice && d.typing === true);
  const stop = await nextEvent(bob, 'user_typing', (d) => d.userId === alice && d.typing === false, 6000);
  expect(stop.roomId).toBe(room);
  expect(bob.events.filter(([e, d]) => e === 'user_typing' && d.typing)).toHaveLength(1);

  // Bob starts typing and vanishes without a stop: the indicator expires on Alice's side.
  await bob.timeout(5000).emitWithAck('message', { type: 'typing_start', data: { roomId: room } });
  await waitFor(() => expect(screen.getByText(/is typing/)).toBeTruthy());
  await waitFor(() => expect(screen.queryByText(/typing/)).toBeNull(), { timeout: 5000 });
  bob.close();
});
