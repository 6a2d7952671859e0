// The scripted Baileys client the interop tests drive (tests/tests/baileys_interop.rs with
// Baileys 6, tests/tests/baileys7_lid.rs with Baileys 7), used as a new user would use the
// library: makeWASocket with a multi-file auth state, the QR from `connection.update`, a new
// socket after the 515 restart, sendMessage, and the `messages.upsert` events. Each version's
// entry script (baileys_client.mjs, ../interop7/baileys7_client.mjs) imports its Baileys and
// calls `run`; this file imports none.
//
// Environment:
//   SIM_URL    the simulator's WebSocket URL (ws://127.0.0.1:PORT/ws/chat)
//   AUTH_DIR   an empty folder for the auth state
//   LOG_LEVEL  Baileys' log level (default debug), logged as JSON lines on stderr.
// Commands come as JSON lines on stdin, what happens goes out as JSON lines on stdout:
//   {"cmd":"send","req":N,"to":JID,"text":T}  -> {"ev":"sent","req":N,"id":ID} or {"ev":"failed",…}
//   {"cmd":"disconnect"}                      -> {"ev":"close",…} (no reconnect)
//   {"cmd":"connect"}                         -> a new socket with the stored auth state
//   {"cmd":"probe"}                           -> {"ev":"probe","results":[…]}: reaching out fails
//   {"cmd":"exit"}
//   and the commands of the entry script.
// Unprompted: {"ev":"qr"}, {"ev":"open"}, {"ev":"close"}, {"ev":"message"}, {"ev":"update"},
// {"ev":"offline_count"} (the server's count of queued stanzas), {"ev":"offline"} (Baileys
// handled them), {"ev":"fatal"}, and the events of the entry script.

import { createInterface } from 'node:readline';
import net from 'node:net';
import dns from 'node:dns';
import { format } from 'node:util';

export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// stdout carries our events only: libsignal's console output goes to the log.
for (const name of ['log', 'info', 'warn', 'error', 'debug']) {
  console[name] = (...args) => process.stderr.write(`[console.${name}] ${format(...args)}\n`);
}

// A pino-shaped logger writing JSON lines on stderr, for the test to show when a step fails.
const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };
function replacer() {
  const seen = new WeakSet();
  return (_key, value) => {
    if (typeof value === 'bigint') {
      return value.toString();
    }
    if (value instanceof Uint8Array) {
      return `<${value.length} bytes>`;
    }
    if (value && typeof value === 'object' && value.type === 'Buffer' && Array.isArray(value.data)) {
      return `<${value.data.length} bytes>`;
    }
    if (value instanceof Error) {
      return { message: value.message, stack: value.stack, data: value.data };
    }
    if (value && typeof value === 'object') {
      if (seen.has(value)) {
        return '<circular>';
      }
      seen.add(value);
    }
    return value;
  };
}
function makeLogger(level, bindings = {}) {
  const min = LEVELS[level] ?? LEVELS.debug;
  const at = (name) => (obj, msg) => {
    if (LEVELS[name] < min) {
      return;
    }
    if (typeof obj === 'string') {
      [obj, msg] = [undefined, obj];
    }
    const line = { level: name, ...bindings, msg, ...(obj === undefined ? {} : { obj }) };
    process.stderr.write(JSON.stringify(line, replacer()) + '\n');
  };
  const logger = { level, child: (more) => makeLogger(level, { ...bindings, ...more }) };
  for (const name of Object.keys(LEVELS)) {
    logger[name] = at(name);
  }
  return logger;
}
const logger = makeLogger(process.env.LOG_LEVEL || 'debug');

/**
 * Runs the command loop with the Baileys module `b` (`makeWASocket`, `DisconnectReason`,
 * `WAMessageStubType`, `useMultiFileAuthState`) and what one version adds through `hooks`:
 * - `me(state, sock)`: our JID and LID for the `open` event;
 * - `messageFields(m)`, `updateFields(update)`: more fields for `message` and `update`;
 * - `onSocket(sock)`: more listeners on each new socket;
 * - `commands`: more commands, `name -> async (c, { sock, state })` returning the event to emit.
 */
export async function run(b, hooks = {}) {
  const url = process.env.SIM_URL;
  const authDir = process.env.AUTH_DIR;
  if (!url || !authDir) {
    process.stderr.write('SIM_URL and AUTH_DIR are required\n');
    process.exit(2);
  }
  const { state, saveCreds } = await b.useMultiFileAuthState(authDir);
  // What we sent, for the retry receipts the peers send (Baileys asks `getMessage`). Over
  // loopback a retry receipt can come before `sendMessage` has returned the message to store, so
  // `getMessage` first waits for the sends under way.
  const sent = new Map();
  const sending = new Set();
  async function getMessage(key) {
    if (!sent.has(key.id)) {
      await Promise.allSettled([...sending]);
    }
    return sent.get(key.id);
  }
  let sock = null;
  let wantOnline = true;

  function textOf(message) {
    return message?.conversation ?? message?.extendedTextMessage?.text ?? null;
  }

  function start() {
    const s = b.makeWASocket({
      waWebSocketUrl: url,
      auth: state,
      logger,
      connectTimeoutMs: 20_000,
      defaultQueryTimeoutMs: 20_000,
      emitOwnEvents: false,
      getMessage,
    });
    sock = s;
    s.ev.on('creds.update', saveCreds);
    // How many stanzas the server says it queued for us (its `<ib><offline count>`).
    s.ws.on('CB:ib,,offline', (node) => {
      const child = node.content?.find?.((c) => c.tag === 'offline');
      emit({ ev: 'offline_count', count: Number(child?.attrs?.count ?? -1) });
    });
    s.ev.on('connection.update', (u) => {
      if (u.qr) {
        emit({ ev: 'qr', qr: u.qr });
      }
      if (u.connection === 'open') {
        const { me, lid } = hooks.me?.(state, s) ?? {};
        emit({ ev: 'open', me: me ?? null, lid: lid ?? null });
      }
      if (u.receivedPendingNotifications) {
        emit({ ev: 'offline' });
      }
      if (u.connection === 'close') {
        const error = u.lastDisconnect?.error;
        const status = error?.output?.statusCode ?? null;
        emit({ ev: 'close', status, error: error?.message ?? null });
        if (sock === s) {
          sock = null;
        }
        // The server asks for a new connection after pairing (515); Baileys leaves it to us.
        if (status === b.DisconnectReason.restartRequired && wantOnline) {
          start();
        }
      }
    });
    s.ev.on('messages.upsert', ({ messages, type }) => {
      for (const m of messages) {
        emit({
          ev: 'message',
          upsert: type,
          id: m.key.id,
          remoteJid: m.key.remoteJid,
          fromMe: !!m.key.fromMe,
          participant: m.key.participant ?? null,
          text: textOf(m.message),
          undecryptable: m.messageStubType === b.WAMessageStubType.CIPHERTEXT,
          stub: m.messageStubParameters ?? null,
          ...hooks.messageFields?.(m),
        });
      }
    });
    s.ev.on('messages.update', (updates) => {
      for (const { key, update } of updates) {
        if (update.status !== undefined) {
          emit({
            ev: 'update',
            id: key.id,
            remoteJid: key.remoteJid,
            status: update.status,
            ...hooks.updateFields?.(update),
          });
        }
      }
    });
    hooks.onSocket?.(s);
  }

  // Reaching anything but the loopback must fail, refused by the preloaded guard.
  async function probe() {
    const results = [];
    const attempt = async (what, f) => {
      try {
        await f();
        results.push({ what, code: null });
      } catch (e) {
        results.push({ what, code: e.code ?? e.cause?.code ?? String(e) });
      }
    };
    await attempt('tcp 192.0.2.1:443', () => new Promise((resolve, reject) => {
      const c = net.connect(443, '192.0.2.1', resolve);
      c.on('error', reject);
    }));
    await attempt('tcp web.whatsapp.com:443', () => new Promise((resolve, reject) => {
      const c = net.connect({ host: 'web.whatsapp.com', port: 443 }, resolve);
      c.on('error', reject);
    }));
    await attempt('lookup web.whatsapp.com', () => dns.promises.lookup('web.whatsapp.com'));
    await attempt('resolve web.whatsapp.com', () => dns.promises.resolve4('web.whatsapp.com'));
    await attempt('fetch https://web.whatsapp.com', () => fetch('https://web.whatsapp.com/'));
    emit({ ev: 'probe', results });
  }

  async function onCommand(c) {
    switch (c.cmd) {
      case 'send': {
        try {
          if (!sock) {
            throw new Error('not connected');
          }
          const send = sock.sendMessage(c.to, { text: c.text });
          sending.add(send);
          let m;
          try {
            m = await send;
          } finally {
            sending.delete(send);
          }
          sent.set(m.key.id, m.message);
          emit({ ev: 'sent', req: c.req, id: m.key.id });
        } catch (e) {
          logger.error({ err: e }, 'send failed');
          emit({ ev: 'failed', req: c.req, error: String(e?.stack ?? e) });
        }
        break;
      }
      case 'disconnect':
        wantOnline = false;
        sock?.end(undefined);
        break;
      case 'connect':
        wantOnline = true;
        if (!sock) {
          start();
        }
        break;
      case 'probe':
        await probe();
        break;
      case 'exit':
        process.exit(0);
        break;
      default: {
        const command = hooks.commands?.[c.cmd];
        if (!command) {
          emit({ ev: 'fatal', error: `unknown command ${JSON.stringify(c)}` });
          break;
        }
        try {
          if (!sock) {
            throw new Error('not connected');
          }
          emit({ req: c.req, ...(await command(c, { sock, state })) });
        } catch (e) {
          logger.error({ err: e }, `${c.cmd} failed`);
          emit({ ev: 'failed', req: c.req, error: String(e?.stack ?? e) });
        }
      }
    }
  }

  process.on('uncaughtException', (e) => {
    emit({ ev: 'fatal', error: String(e?.stack ?? e) });
  });
  process.on('unhandledRejection', (e) => {
    emit({ ev: 'fatal', error: String(e?.stack ?? e) });
  });

  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (!line.trim()) {
      return;
    }
    let c;
    try {
      c = JSON.parse(line);
    } catch {
      emit({ ev: 'fatal', error: `bad command line ${line}` });
      return;
    }
    onCommand(c);
  });
  // The test ends us by closing stdin (or killing us).
  lines.on('close', () => process.exit(0));

  emit({ ev: 'ready', node: process.version });
  start();
}
