// The blueprint's own ChatRoom (Phase 4.2, copied unchanged into test/blueprint/) on this
// package's hook, inside <StrictMode>, against the real gateway: it chats, and after the
// network drops it shows what was posted meanwhile, each message once.

import { act, render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { expect, test } from 'vitest';

import { findClient } from '../src';
import { ChatRoom } from './blueprint/src/components/Chat/ChatRoom';
import { setAuth } from './blueprint/src/hooks/useAuth';
import { nextEvent, peer, uid, wrapperFor, gatewayForFile } from './support';

const gw = gatewayForFile();

test("the blueprint's ChatRoom runs unchanged: chats, and after a reconnect shows what was missed, once", async () => {
  const tenant = uid('t');
  const room = uid('room');
  const alice = uid('alice');
  const url = `${gw.url}/ws`;
  setAuth(alice, gw.token({ sub: alice, tenantId: tenant }));
  const Wrapper = wrapperFor({ url, reconnectionDelay: 1500 });
  render(
    <Wrapper>
      <ChatRoom roomId={room} />
    </Wrapper>,
  );
  const bob = await peer(gw.url, gw.token({ sub: uid('bob'), tenantId: tenant }));
  await bob.timeout(5000).emitWithAck('join_room', { roomId: room });
  const client = await waitFor(() => {
    const c = findClient(url, alice);
    expect(c?.getRoom(room).joined).toBe(true);
    return c!;
  });

  const user = userEvent.setup();
  const input = screen.getByPlaceholderText('Type a message...');
  await user.type(input, 'hello from the blueprint{Enter}');
  await nextEvent(bob, 'chat_message', (m) => m.message === 'hello from the blueprint');
  await screen.findByText('hello from the blueprint');
  await bob.timeout(5000).emitWithAck('message', { type: 'send_message', data: { roomId: room, message: 'hi alice' } });
  await screen.findByText('hi alice');

  // The network drops; a backend posts while Alice is away.
  const before = client.getSnapshot().connectionId;
  act(() => client.rawSocket!.io.engine.close());
  await screen.findByText('Disconnected from chat server');
  await gw.api(`/rooms/${room}/messages`, { body: { tenantId: tenant, userId: 'bot', message: 'while you were away' } });
  await waitFor(() => expect(client.getSnapshot().connectionId).not.toBe(before), { timeout: 10_000 });
  await screen.findByText('while you were away');
  await bob.timeout(5000).emitWithAck('message', { type: 'send_message', data: { roomId: room, message: 'after' } });
  await screen.findByText('after');
  for (const text of ['hello from the blueprint', 'hi alice', 'while you were away', 'after']) {
    expect(screen.getAllByText(text)).toHaveLength(1);
  }
  bob.close();
});
