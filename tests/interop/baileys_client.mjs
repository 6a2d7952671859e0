// Baileys 6 (npm @whiskeysockets/baileys, pinned by package-lock.json) for
// tests/tests/baileys_interop.rs: the command loop of driver.mjs, nothing added.
//
// Run as `node --require ./loopback_only.cjs baileys_client.mjs` (environment and commands:
// driver.mjs).
//
// Baileys 6.7.24 emits the events of offline messages only at the next flush of its event
// buffer, which comes with the next live stanza: the test sends one after a reconnect.

import makeWASocket, {
  DisconnectReason,
  WAMessageStubType,
  useMultiFileAuthState,
} from '@whiskeysockets/baileys';

import { run } from './driver.mjs';

await run(
  { makeWASocket, DisconnectReason, WAMessageStubType, useMultiFileAuthState },
  { me: (_state, sock) => ({ me: sock.user?.id, lid: sock.user?.lid }) },
);
