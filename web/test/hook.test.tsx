// useWebSocket against the real gateway, inside <StrictMode>: one connection for a double
// mount, each listener called once, also after a reconnect.

import { act, render, screen, waitFor } from '@testing-library/react';
import { useEffect } from 'react';
import { expect, test } from 'vitest';

import { findClient, useWebSocket } from '../src';
import { uid, wrapperFor, gatewayForFile } from './support';

const gw = gatewayForFile();

test('a StrictMode double mount opens one connection and each listener is called once, before and after a reconnect', async () => {
  const user = uid('u');
  const url = `${gw.url}/ws`;
  const token = gw.token({ sub: user, tenantId: uid('t') });
  const received: number[] = [];
  let renders = 0;
  function Probe() {
    const { status, on, off } = useWebSocket();
    renders += 1;
    useEffect(() => {
      const h = (d: { n: number }) => received.push(d.n);
      on('ping_test', h);
      return () => off('ping_test', h);
    }, [on, off]);
    return <div>status: {status}</div>;
  }
  const Wrapper = wrapperFor({ url, getToken: () => token, user, reconnectionDelay: 300 });
  render(
    <Wrapper>
      <Probe />
      <Probe />
    </Wrapper>,
  );
  await waitFor(() => expect(screen.getAllByText('status: connected')).toHaveLength(2));
  expect(renders).toBeGreaterThan(0);
  const stats = await gw.api('/stats');
  expect(stats.users[user]).toBe(1);

  const publish = (n: number) => gw.api('/publish', { body: { target: { userId: user }, event: 'ping_test', data: { n } } });
  await publish(1);
  await waitFor(() => expect(received).toEqual([1, 1])); // two components, once each

  const client = findClient(url, user)!;
  const before = client.getSnapshot().connectionId;
  act(() => client.rawSocket!.io.engine.close()); // the network drops
  await waitFor(() => expect(client.getSnapshot().connectionId).not.toBe(before));
  await waitFor(() => expect(screen.getAllByText('status: connected')).toHaveLength(2));
  await publish(2);
  await publish(3);
  await waitFor(() => expect(received).toEqual([1, 1, 2, 2, 3, 3]));
  expect((await gw.api('/stats')).users[user]).toBe(1);
});

test('the connection is torn down after the last component unmounts, not before', async () => {
  const user = uid('u');
  const url = `${gw.url}/ws`;
  const token = gw.token({ sub: user });
  function Probe() {
    const { status } = useWebSocket();
    return <div>status: {status}</div>;
  }
  const Wrapper = wrapperFor({ url, getToken: () => token, user });
  const view = render(
    <Wrapper>
      <Probe />
    </Wrapper>,
  );
  await screen.findByText('status: connected');
  view.unmount();
  await waitFor(() => expect(findClient(url, user)).toBeUndefined());
  await waitFor(async () => expect((await gw.api('/stats')).users[user]).toBeUndefined());
});

test('a disconnect by the server (API) is final: status disconnected, no reconnect loop', async () => {
  const user = uid('u');
  const url = `${gw.url}/ws`;
  const reasons: string[] = [];
  function Probe() {
    const { status } = useWebSocket();
    return <div>status: {status}</div>;
  }
  const Wrapper = wrapperFor({ url, getToken: (r) => (reasons.push(r), gw.token({ sub: user })), user, reconnectionDelay: 100 });
  render(
    <Wrapper>
      <Probe />
    </Wrapper>,
  );
  await screen.findByText('status: connected');
  // The server's `connected` event: the socket is in its user room from here on.
  await waitFor(() => expect(findClient(url, user)?.getSnapshot().userId).toBe(user));
  expect(await gw.api(`/users/${user}/disconnect`, { method: 'POST' })).toEqual({ disconnected: 1 });
  await screen.findByText('status: disconnected');
  expect(findClient(url, user)?.getSnapshot().error).toBe('Disconnected by the server');
  expect(reasons).toEqual(['connect']);
});
