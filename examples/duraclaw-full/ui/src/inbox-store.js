// The page's one inbox store (src/inbox.js) and the hook views read it with.

import { useEffect, useState } from 'preact/hooks';
import { loginEnded } from './api.js';
import { createInboxStore } from './inbox.js';

export const inbox = createInboxStore({
  onLoginEnded: () => loginEnded('Your login ended (signed out elsewhere, or the password changed): sign in again.'),
});

/** The inbox state, re-rendering on every change. */
export function useInbox() {
  const [state, setState] = useState(inbox.state);
  useEffect(() => inbox.subscribe(setState), []);
  return state;
}
