// Tokens, against the real gateway, inside <StrictMode>: every handshake asks getToken, the
// token is refreshed before exp, an expired or invalid one is retried once with a fresh token,
// and a second refusal ends in `unauthorized` instead of a loop.

import { render, screen, waitFor } from '@testing-library/react';
import { expect, test } from 'vitest';

import { useWebSocket, type TokenReason } from '../src';
import { uid, wrapperFor, gatewayForFile } from './support';

const gw = gatewayForFile();

function Status() {
  const { status, error, on, off } = useWebSocket();
  return (
    <div>
      status: {status} {error ? `(${error})` : ''}
      <Refreshed on={on} off={off} />
    </div>
  );
}

const refreshed: number[] = [];
function Refreshed({ on, off }: { on: (e: string, h: (d: { exp: number }) => void) => void; off: (e: string, h: any) => void }) {
  const h = (d: { exp: number }) => refreshed.push(d.exp);
  on('token_refreshed', h);
  void off;
  return null;
}

function mount(getToken: (r: TokenReason) => string | Promise<string>, user: string, extra = {}) {
  const Wrapper = wrapperFor({ url: `${gw.url}/ws`, getToken, user, ...extra });
  return render(
    <Wrapper>
      <Status />
    </Wrapper>,
  );
}

test('the token is refreshed with refresh_token before it expires', async () => {
  const user = uid('u');
  const reasons: TokenReason[] = [];
  // 62 s of life and a refresh 60 s before exp: the refresh comes after about 2 s.
  mount((r) => {
    reasons.push(r);
    return gw.token({ sub: user }, 62);
  }, user, { refreshBeforeExpMs: 60_000 });
  await screen.findByText(/status: connected/);
  await waitFor(() => expect(reasons).toContain('refresh'), { timeout: 8000 });
  await waitFor(() => expect(refreshed.length).toBeGreaterThan(0));
  expect(reasons[0]).toBe('connect');
  expect(screen.getByText(/status: connected/)).toBeTruthy();
});

test('an expired token is replaced once by a fresh one and the socket connects', async () => {
  const user = uid('u');
  const reasons: TokenReason[] = [];
  mount((r) => {
    reasons.push(r);
    return r === 'retry' ? gw.token({ sub: user }) : gw.token({ sub: user }, -120);
  }, user);
  await screen.findByText(/status: connected/);
  expect(reasons).toEqual(['connect', 'retry']);
});

test('a token refused twice ends in unauthorized, without a retry loop', async () => {
  const user = uid('u');
  const reasons: TokenReason[] = [];
  mount((r) => {
    reasons.push(r);
    return 'not-a-jwt';
  }, user, { reconnectionDelay: 100 });
  await screen.findByText(/status: unauthorized \(Invalid token\)/);
  expect(reasons).toEqual(['connect', 'retry']);
  // No further handshake: a loop would have asked again within a few reconnection delays.
  await new Promise((r) => setTimeout(r, 1000));
  expect(reasons).toEqual(['connect', 'retry']);
});
