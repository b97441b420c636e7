// The blueprint's ChatRoom reads the signed-in user from `useAuth()`; tests set it here.
let current: { user: { id: string } | null; token: string | undefined } = { user: null, token: undefined };

export function setAuth(userId: string, token: string) {
  current = { user: { id: userId }, token };
}

export const useAuth = () => current;
