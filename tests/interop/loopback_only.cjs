// Preloaded with `node --require` before anything else runs: this process may reach the
// loopback interface only. TCP connects (net, tls, http, https, ws and fetch all end in
// net.Socket#connect) must name 127.0.0.0/8, ::1 or "localhost"; name lookups resolve
// "localhost" only; DNS queries, UDP sockets, IPC paths, child processes and workers are
// refused. A refused attempt fails like a refused connection (an `error` event or a rejected
// callback, code ERR_LOOPBACK_ONLY) and is reported as a JSON line on stdout:
//   {"ev":"blocked","what":"connect","target":"1.1.1.1:443"}
// The Rust side of the test counts these lines and probes the guard itself at start.
'use strict';

const fs = require('node:fs');
const net = require('node:net');
const dns = require('node:dns');
const dgram = require('node:dgram');
const childProcess = require('node:child_process');
const workerThreads = require('node:worker_threads');

const CODE = 'ERR_LOOPBACK_ONLY';

function report(what, target) {
  fs.writeSync(1, JSON.stringify({ ev: 'blocked', what, target: String(target) }) + '\n');
}

function refusal(what, target) {
  report(what, target);
  const err = new Error(`loopback only: ${what} ${target} refused`);
  err.code = CODE;
  return err;
}

function isLoopbackHost(host) {
  if (typeof host !== 'string') {
    return false;
  }
  let h = host.toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) {
    h = h.slice(1, -1);
  }
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') {
    return true;
  }
  if (h.startsWith('::ffff:')) {
    h = h.slice('::ffff:'.length);
  }
  return net.isIPv4(h) && h.split('.')[0] === '127';
}

// What a Socket#connect call names, in the argument forms node accepts: the array that
// net.connect passes after normalizing, an options object, a port (and host), or an IPC path.
function connectTarget(args) {
  let options = args[0];
  if (Array.isArray(options)) {
    options = options[0];
  }
  if (options !== null && typeof options === 'object') {
    if (options.path !== undefined) {
      return { ok: false, target: `ipc:${options.path}` };
    }
    const host = options.host ?? 'localhost';
    return { ok: isLoopbackHost(host), target: `${host}:${options.port}` };
  }
  if (typeof options === 'string' && !/^\d+$/.test(options)) {
    return { ok: false, target: `ipc:${options}` };
  }
  const host = typeof args[1] === 'string' ? args[1] : 'localhost';
  return { ok: isLoopbackHost(host), target: `${host}:${options}` };
}

const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function guardedConnect(...args) {
  const { ok, target } = connectTarget(args);
  if (ok) {
    return connect.apply(this, args);
  }
  const err = refusal('connect', target);
  process.nextTick(() => this.destroy(err));
  return this;
};

// Name lookups: "localhost" and loopback literals only, through node's own lookup.
const lookup = dns.lookup;
dns.lookup = function guardedLookup(hostname, options, callback) {
  const cb = typeof options === 'function' ? options : callback;
  if (isLoopbackHost(hostname)) {
    return lookup.call(this, hostname, options, callback);
  }
  const err = refusal('lookup', hostname);
  process.nextTick(() => cb(err));
  return {};
};
const lookupPromise = dns.promises.lookup;
dns.promises.lookup = async function guardedLookupPromise(hostname, options) {
  if (isLoopbackHost(hostname)) {
    return lookupPromise.call(this, hostname, options);
  }
  throw refusal('lookup', hostname);
};

// DNS queries go out through c-ares, below the net module: refuse them all.
function refuseQueries(target, isPromise) {
  for (const key of Object.getOwnPropertyNames(target)) {
    if (!/^(resolve|reverse|lookupService)/.test(key) || typeof target[key] !== 'function') {
      continue;
    }
    target[key] = isPromise
      ? async (name) => {
          throw refusal(`dns.${key}`, name);
        }
      : (name, ...rest) => {
          const cb = rest.reverse().find((a) => typeof a === 'function');
          const err = refusal(`dns.${key}`, name);
          if (cb) {
            process.nextTick(() => cb(err));
            return undefined;
          }
          throw err;
        };
  }
}
refuseQueries(dns, false);
refuseQueries(dns.Resolver.prototype, false);
refuseQueries(dns.promises, true);
refuseQueries(dns.promises.Resolver.prototype, true);

// UDP, subprocesses (which would start without this preload) and workers: none.
dgram.createSocket = (type) => {
  throw refusal('udp', type);
};
for (const key of ['spawn', 'spawnSync', 'exec', 'execSync', 'execFile', 'execFileSync', 'fork']) {
  childProcess[key] = (file) => {
    throw refusal(`child_process.${key}`, file);
  };
}
workerThreads.Worker = class {
  constructor(file) {
    throw refusal('worker', file);
  }
};

// ES modules that import these functions by name see the guarded ones too.
require('node:module').syncBuiltinESMExports();
