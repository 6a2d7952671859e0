// Baileys 7 (npm baileys, pinned by package-lock.json) for tests/tests/baileys7_lid.rs: the
// command loop of ../interop/driver.mjs, plus what Baileys 7 shows about LID. The test looks at
// the message keys (remoteJidAlt, participantAlt, addressingMode), the LID/PN mapping Baileys
// learned, and the privacy tokens it holds.
//
// Run as `node --require ../interop/loopback_only.cjs baileys7_client.mjs` with the
// environment of driver.mjs and
//   SIM_ROOT   the simulator's certificate root public key, hex (see below).
// Commands besides driver.mjs's:
//   {"cmd":"mapping","req":N,"pn":JID}        -> {"ev":"mapping","req":N,"lid":JID|null}
//   {"cmd":"mapping","req":N,"lid":JID}       -> {"ev":"mapping","req":N,"pn":JID|null}
//   {"cmd":"tctoken","req":N,"jid":JID}       -> {"ev":"tctoken","req":N,"token":HEX|null,"sender_t":…}
//   {"cmd":"group","req":N,"jid":JID}         -> {"ev":"group","req":N,"meta":{…}} (groupMetadata)
// Unprompted besides driver.mjs's: {"ev":"lid_mapping"} (Baileys' `lid-mapping.update`).
//
// Baileys 7 checks the server's certificate chain against WhatsApp's root key
// (`WA_CERT_DETAILS.PUBLIC_KEY`, lib/Utils/noise-handler.js), which the simulator cannot sign
// with. The script pins the simulator's root instead, as a client pins a test CA: the check
// itself (both signatures and the issuer serial) still runs.

import makeWASocket, {
  DisconnectReason,
  WA_CERT_DETAILS,
  WAMessageStubType,
  useMultiFileAuthState,
} from 'baileys';

import { emit, run } from '../interop/driver.mjs';

const root = process.env.SIM_ROOT;
if (!/^[0-9a-f]{64}$/.test(root ?? '')) {
  process.stderr.write('SIM_ROOT (64 hex digits) is required\n');
  process.exit(2);
}
WA_CERT_DETAILS.PUBLIC_KEY = Buffer.from(root, 'hex');

await run(
  { makeWASocket, DisconnectReason, WAMessageStubType, useMultiFileAuthState },
  {
    me: (state) => ({ me: state.creds.me?.id, lid: state.creds.me?.lid }),
    messageFields: (m) => ({
      remoteJidAlt: m.key.remoteJidAlt ?? null,
      participantAlt: m.key.participantAlt ?? null,
      addressingMode: m.key.addressingMode ?? null,
    }),
    updateFields: (update) => ({ stub: update.messageStubParameters ?? null }),
    onSocket: (sock) => {
      sock.ev.on('lid-mapping.update', (m) => {
        emit({ ev: 'lid_mapping', lid: m?.lid ?? null, pn: m?.pn ?? null });
      });
    },
    commands: {
      mapping: async (c, { sock }) => {
        const store = sock.signalRepository.lidMapping;
        return c.pn
          ? { ev: 'mapping', lid: (await store.getLIDForPN(c.pn)) ?? null }
          : { ev: 'mapping', pn: (await store.getPNForLID(c.lid)) ?? null };
      },
      tctoken: async (c, { state }) => {
        const got = await state.keys.get('tctoken', [c.jid]);
        const entry = got?.[c.jid];
        return {
          ev: 'tctoken',
          token: entry?.token?.length ? Buffer.from(entry.token).toString('hex') : null,
          sender_t: entry?.senderTimestamp ?? null,
        };
      },
      group: async (c, { sock }) => ({ ev: 'group', meta: await sock.groupMetadata(c.jid) }),
    },
  },
);
