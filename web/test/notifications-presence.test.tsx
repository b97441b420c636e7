// NotificationBell against the real gateway; PresenceList against the contract (list_online,
// PROTOCOL §3, then user_status) on an in-process socket.io server. Inside <StrictMode>.

import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { expect, test } from 'vitest';

import { findClient, NotificationBell, PresenceList } from '../src';
import { fakeGateway, uid, wrapperFor, gatewayForFile } from './support';

const gw = gatewayForFile();

test('the bell counts unread notifications (stored and live), lists them, and drops the count right after a mark', async () => {
  const user = uid('u');
  const tenant = uid('t');
  const create = (message: string) => gw.api('/notifications', { body: { userId: user, tenantId: tenant, title: 'T', message, type: 'info' } });
  await create('stored before the page');
  const loadUnread = async () => (await gw.api(`/users/${user}/notifications?unread=true`)).notifications;
  const Wrapper = wrapperFor({ url: `${gw.url}/ws`, getToken: () => gw.token({ sub: user, tenantId: tenant }), user });
  render(
    <Wrapper>
      <NotificationBell loadUnread={loadUnread} />
    </Wrapper>,
  );
  // Accessible names by label: getByRole's accessibility-tree walk is slow in jsdom.
  const bell = await screen.findByLabelText('Notifications (1 unread)');
  // Until the server's `connected` event (connectionId), not the CONNECT ack: the socket joins its
  // user room only once `connected` is sent, so a notification created before may miss it live.
  await waitFor(() => expect(findClient(`${gw.url}/ws`, user)?.getSnapshot().connectionId).toBeTruthy());
  await create('live');
  await screen.findByLabelText('Notifications (2 unread)');
  const ui = userEvent.setup();
  await ui.click(bell);
  const list = screen.getByRole('list', { name: 'Unread notifications' });
  expect(within(list).getByText('live')).toBeTruthy();
  const [first] = within(list).getAllByRole('button', { name: 'Mark read' });
  await ui.click(first);
  // At once, before the server answered.
  expect(screen.getByRole('button', { name: /^Notifications/ }).getAttribute('aria-label')).toBe('Notifications (1 unread)');
  await waitFor(async () => expect((await loadUnread()).length).toBe(1));
});

test('the presence list starts from list_online and follows user_status', async () => {
  let asked = 0;
  const fake = await fakeGateway((socket) => {
    socket.on('list_online', (_d, ack) => {
      asked += 1;
      ack?.({ ok: true, users: { ann: { status: 'online', since: 't' }, ben: { status: 'away', since: 't' } }, truncated: false });
      setTimeout(() => {
        socket.emit('user_status', { userId: 'cid', status: 'online', timestamp: 't' });
        socket.emit('user_status', { userId: 'ann', status: 'offline', timestamp: 't' });
      }, 20);
    });
  });
  const Wrapper = wrapperFor({ url: `${fake.url}/ws`, getToken: () => 'me', user: 'me' });
  render(
    <Wrapper>
      <PresenceList />
    </Wrapper>,
  );
  const online = screen.getByRole('list', { name: 'Online' });
  await waitFor(() => expect(within(online).queryAllByRole('listitem').map((li) => li.textContent?.trim())).toEqual(['ben (away)', 'cid']));
  expect(asked).toBeGreaterThan(0);
  await fake.close();
});

test('in a big tenant the presence list shows the watched users, through watch_presence', async () => {
  const watches: string[][] = [];
  const fake = await fakeGateway((socket) => {
    socket.on('list_online', (_d, ack) => ack?.({ ok: true, users: { stranger: { status: 'online', since: 't' } }, truncated: true }));
    socket.on('watch_presence', (d, ack) => {
      watches.push(d.userIds);
      ack?.({ ok: true, users: { dan: { status: 'online', since: 't' }, eve: { status: 'offline', since: 't' } } });
      setTimeout(() => socket.emit('user_status', { userId: 'eve', status: 'busy', timestamp: 't' }), 20);
    });
  });
  const Wrapper = wrapperFor({ url: `${fake.url}/ws`, getToken: () => 'me', user: 'watcher' });
  render(
    <Wrapper>
      <PresenceList watch={['eve', 'dan']} />
    </Wrapper>,
  );
  const online = screen.getByRole('list', { name: 'Online' });
  await waitFor(() => expect(within(online).queryAllByRole('listitem').map((li) => li.textContent?.trim())).toEqual(['dan', 'eve (busy)']));
  expect(watches[0].sort()).toEqual(['dan', 'eve']);
  await fake.close();
});
