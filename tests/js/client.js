#!/usr/bin/env node
'use strict';
/*
 * Long-running driver around the official pusher-js client, for the Python
 * end-to-end tests (see tests/jsdriver.py, whose docstring documents the full
 * command/event protocol).
 *
 * stdin:  newline-delimited JSON commands   {"cmd": "...", "id"?: ..., ...}
 * stdout: newline-delimited JSON events     {"type": "...", ...}
 * stderr: free-form diagnostics (pusher-js log with --debug)
 *
 * Start options (flag, or environment variable as fallback):
 *   --host H                 PUSHER_HOST                (default 127.0.0.1)
 *   --port P                 PUSHER_PORT                (required)
 *   --key K                  PUSHER_KEY                 (default app-key)
 *   --activity-timeout MS    PUSHER_ACTIVITY_TIMEOUT    pusher-js activityTimeout
 *   --pong-timeout MS        PUSHER_PONG_TIMEOUT        pusher-js pongTimeout
 *   --unavailable-timeout MS PUSHER_UNAVAILABLE_TIMEOUT pusher-js unavailableTimeout
 *   --auth-timeout MS        PUSHER_AUTH_TIMEOUT        how long a customHandler waits
 *                                                       for "auth_response" (default 10000)
 *   --no-connect             PUSHER_NO_CONNECT=1        do not create/connect the client
 *                                                       until a "connect" command
 *   --raw                    PUSHER_RAW=1               report every websocket frame
 *   --options JSON           PUSHER_OPTIONS             extra pusher-js options (merged last)
 *   --debug                  PUSHER_DEBUG=1             pusher-js log to stderr
 *
 * The driver never exits because of a bad command; it exits when stdin closes
 * (after disconnecting) or on {"cmd": "exit"}.
 */

const Pusher = require('pusher-js');

// ---------------------------------------------------------------- output

function safe(value, depth, seen) {
  depth = depth || 0;
  seen = seen || new Set();
  if (value === null || value === undefined) return value === undefined ? null : value;
  const t = typeof value;
  if (t === 'string' || t === 'boolean') return value;
  if (t === 'number') return Number.isFinite(value) ? value : String(value);
  if (t === 'bigint') return value.toString();
  if (t === 'function' || t === 'symbol') return undefined;
  if (depth > 8) return '[depth]';
  if (seen.has(value)) return '[circular]';
  seen.add(value);
  try {
    if (value instanceof Error) {
      const out = { name: value.name, message: value.message };
      for (const k of ['code', 'errno', 'syscall', 'status', 'type']) {
        if (value[k] !== undefined) out[k] = safe(value[k], depth + 1, seen);
      }
      if (value.cause !== undefined) out.cause = safe(value.cause, depth + 1, seen);
      return out;
    }
    if (Array.isArray(value)) {
      return value.map((v) => {
        const s = safe(v, depth + 1, seen);
        return s === undefined ? null : s;
      });
    }
    if (Buffer.isBuffer(value)) return value.toString('utf8');
    const out = {};
    for (const k of Object.keys(value)) {
      // faye-websocket event objects carry their target (the socket): skip it.
      if (k === 'target' || k === 'currentTarget' || k === '_driver' || k === 'pusher') continue;
      const s = safe(value[k], depth + 1, seen);
      if (s !== undefined) out[k] = s;
    }
    if (out.message === undefined && typeof value.message === 'string') out.message = value.message;
    return out;
  } finally {
    seen.delete(value);
  }
}

function emit(obj) {
  let line;
  try {
    line = JSON.stringify(safe(obj));
  } catch (e) {
    line = JSON.stringify({ type: 'driver_error', error: 'unserializable event: ' + String(e) });
  }
  // process.stdout is synchronous for files and pipes on Linux, so each line
  // is flushed as it is written.
  process.stdout.write(line + '\n');
}

// Find a numeric close/error code anywhere in a (nested) pusher-js error object.
function findCode(err, depth) {
  depth = depth || 0;
  if (!err || typeof err !== 'object' || depth > 5) return null;
  if (typeof err.code === 'number') return err.code;
  for (const k of ['data', 'error', 'cause']) {
    const c = findCode(err[k], depth + 1);
    if (c !== null) return c;
  }
  return null;
}

function findMessage(err, depth) {
  depth = depth || 0;
  if (err === null || err === undefined || depth > 5) return null;
  if (typeof err === 'string') return err;
  if (typeof err !== 'object') return String(err);
  if (typeof err.message === 'string' && err.message) return err.message;
  for (const k of ['data', 'error', 'cause']) {
    const m = findMessage(err[k], depth + 1);
    if (m) return m;
  }
  return null;
}

function errorName(e) {
  if (!e || typeof e !== 'object') return null;
  const ctor = e.constructor && e.constructor.name;
  if (ctor && ctor !== 'Error' && ctor !== 'Object') return ctor;
  return e.name || ctor || null;
}

// ---------------------------------------------------------------- options

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    let name = a.slice(2);
    let val;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      val = name.slice(eq + 1);
      name = name.slice(0, eq);
    } else if (['no-connect', 'raw', 'debug'].includes(name)) {
      val = true;
    } else {
      val = argv[i + 1];
      i++;
    }
    out[name] = val;
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const env = process.env;
function opt(flag, envName, dflt) {
  if (args[flag] !== undefined) return args[flag];
  if (env[envName] !== undefined && env[envName] !== '') return env[envName];
  return dflt;
}
function truthy(v) {
  return v === true || v === '1' || v === 'true' || v === 'yes';
}
function intOrUndef(v) {
  if (v === undefined || v === null || v === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

const config = {
  host: opt('host', 'PUSHER_HOST', '127.0.0.1'),
  port: intOrUndef(opt('port', 'PUSHER_PORT')),
  key: opt('key', 'PUSHER_KEY', 'app-key'),
  activityTimeout: intOrUndef(opt('activity-timeout', 'PUSHER_ACTIVITY_TIMEOUT')),
  pongTimeout: intOrUndef(opt('pong-timeout', 'PUSHER_PONG_TIMEOUT')),
  unavailableTimeout: intOrUndef(opt('unavailable-timeout', 'PUSHER_UNAVAILABLE_TIMEOUT')),
  authTimeout: intOrUndef(opt('auth-timeout', 'PUSHER_AUTH_TIMEOUT')) || 10000,
  connect: !truthy(opt('no-connect', 'PUSHER_NO_CONNECT', false)),
  raw: truthy(opt('raw', 'PUSHER_RAW', false)),
  debug: truthy(opt('debug', 'PUSHER_DEBUG', false)),
  extra: {},
};
try {
  const extra = opt('options', 'PUSHER_OPTIONS');
  if (extra) config.extra = JSON.parse(extra);
} catch (e) {
  emit({ type: 'driver_error', error: 'bad --options JSON: ' + e.message });
}

if (config.debug) {
  Pusher.logToConsole = false;
  Pusher.log = (msg) => process.stderr.write('[pusher-js] ' + String(msg) + '\n');
}

// ---------------------------------------------------------------- raw socket observer
// pusher-js (node build) creates sockets via Pusher.Runtime.getWebSocketAPI();
// wrap that constructor so the driver can see every socket's URL, raw frames
// and the exact close code/reason, including sockets closed during the
// handshake (e.g. 4001 for an unknown app key).

let socketSeq = 0;
let currentSocketId = null; // pusher socket_id of the live connection
let rawEnabled = config.raw;

try {
  const runtime = Pusher.Runtime;
  const origGetAPI = runtime.getWebSocketAPI;
  const OrigClient = origGetAPI.call(runtime);
  function ObservedWebSocket(url, protocols, options) {
    const ws = new OrigClient(url, protocols, options);
    const n = ++socketSeq;
    emit({ type: 'socket_open_attempt', socket: n, url: url });
    ws.addEventListener('open', () => emit({ type: 'socket_open', socket: n, url: url }));
    ws.addEventListener('close', (e) =>
      emit({
        type: 'socket_closed',
        socket: n,
        code: e && e.code !== undefined ? e.code : null,
        reason: e && e.reason !== undefined ? e.reason : null,
        wasClean: e && e.wasClean !== undefined ? e.wasClean : null,
      })
    );
    ws.addEventListener('error', (e) =>
      emit({ type: 'socket_error', socket: n, message: findMessage(e) })
    );
    ws.addEventListener('message', (e) => {
      if (rawEnabled) emit({ type: 'raw', direction: 'in', socket: n, data: e.data });
    });
    const origSend = ws.send.bind(ws);
    ws.send = (data) => {
      if (rawEnabled) emit({ type: 'raw', direction: 'out', socket: n, data: data });
      return origSend(data);
    };
    return ws;
  }
  runtime.getWebSocketAPI = function () {
    return ObservedWebSocket;
  };
} catch (e) {
  emit({ type: 'driver_error', error: 'could not install socket observer: ' + String(e) });
}

// ---------------------------------------------------------------- auth bridge

let authSeq = 0;
const pendingAuth = new Map(); // id -> {callback, timer, kind}

function toJSONString(v) {
  if (v === undefined || v === null) return undefined;
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function requestAuth(kind, params, callback) {
  const id = 'auth-' + ++authSeq;
  const timer = setTimeout(() => {
    if (!pendingAuth.has(id)) return;
    pendingAuth.delete(id);
    emit({ type: 'auth_timeout', id: id, kind: kind });
    callback(new Error('driver: no auth_response within ' + config.authTimeout + ' ms'), null);
  }, config.authTimeout);
  pendingAuth.set(id, { callback: callback, timer: timer, kind: kind });
  const ev = { type: 'auth_request', id: id, kind: kind, socket_id: params.socketId };
  if (kind === 'channel') ev.channel_name = params.channelName;
  emit(ev);
}

function handleAuthResponse(cmd) {
  const entry = pendingAuth.get(cmd.id);
  if (!entry) throw new Error('no pending auth request with id ' + JSON.stringify(cmd.id));
  pendingAuth.delete(cmd.id);
  clearTimeout(entry.timer);
  if (cmd.error !== undefined && cmd.error !== null) {
    entry.callback(new Error(String(cmd.error)), null);
    return;
  }
  const data = { auth: cmd.auth === undefined || cmd.auth === null ? '' : String(cmd.auth) };
  if (entry.kind === 'channel') {
    const cd = toJSONString(cmd.channel_data);
    if (cd !== undefined) data.channel_data = cd;
    if (cmd.shared_secret !== undefined && cmd.shared_secret !== null) {
      data.shared_secret = cmd.shared_secret;
    }
  } else {
    const ud = toJSONString(cmd.user_data);
    if (ud !== undefined) data.user_data = ud;
  }
  entry.callback(null, data);
}

// ---------------------------------------------------------------- client

let pusher = null;

function describeMembers(members) {
  const list = [];
  try {
    members.each((m) => list.push({ id: m.id, info: m.info === undefined ? null : m.info }));
  } catch (e) {
    /* ignore */
  }
  return {
    me: members.me ? { id: members.me.id, info: members.me.info === undefined ? null : members.me.info } : null,
    myID: members.myID === undefined ? null : members.myID,
    count: members.count,
    members: list,
  };
}

function bindChannel(channel) {
  if (channel.__driverBound) return;
  channel.__driverBound = true;
  const name = channel.name;
  // pusher-js hands global callbacks (eventName, data) only; the metadata
  // (user_id of a presence client event) is passed to emit, so report there.
  const originalEmit = channel.emit.bind(channel);
  channel.emit = (eventName, data, metadata) => {
    const ev = { type: 'event', channel: name, event: eventName };
    if (eventName === 'pusher:subscription_succeeded' && channel.members) {
      ev.data = describeMembers(channel.members);
    } else {
      ev.data = data === undefined ? null : data;
    }
    if (metadata && metadata.user_id !== undefined) ev.user_id = metadata.user_id;
    emit(ev);
    return originalEmit(eventName, data, metadata);
  };
}

function buildOptions() {
  const options = {
    wsHost: config.host,
    wsPort: config.port,
    wssPort: config.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    cluster: 'mt1',
    channelAuthorization: {
      customHandler: (params, callback) => requestAuth('channel', params, callback),
    },
    userAuthentication: {
      customHandler: (params, callback) => requestAuth('user', params, callback),
    },
  };
  if (config.activityTimeout !== undefined) options.activityTimeout = config.activityTimeout;
  if (config.pongTimeout !== undefined) options.pongTimeout = config.pongTimeout;
  if (config.unavailableTimeout !== undefined) options.unavailableTimeout = config.unavailableTimeout;
  return Object.assign(options, config.extra || {});
}

function createClient() {
  if (config.port === undefined) throw new Error('no --port / PUSHER_PORT given');
  // pusher-js connects from its constructor when Pusher.isReady; hold that
  // off until our listeners are bound so no state change is missed.
  const Base = Object.getPrototypeOf(Pusher);
  const holders = [Pusher, Base && Base.isReady !== undefined ? Base : null].filter(Boolean);
  const saved = holders.map((h) => Object.prototype.hasOwnProperty.call(h, 'isReady') ? h.isReady : undefined);
  let p;
  try {
    holders.forEach((h) => { h.isReady = false; });
    p = new Pusher(config.key, buildOptions());
  } finally {
    holders.forEach((h, i) => {
      if (saved[i] === undefined) delete h.isReady;
      else h.isReady = saved[i];
    });
  }
  pusher = p;
  const conn = p.connection;
  conn.bind('state_change', (s) => {
    emit({ type: 'state', previous: s.previous, current: s.current });
  });
  conn.bind('connected', () => {
    currentSocketId = conn.socket_id;
    emit({ type: 'connected', socket_id: conn.socket_id });
  });
  conn.bind('connecting_in', (delay) => emit({ type: 'connecting_in', seconds: delay }));
  conn.bind('error', (err) => {
    emit({
      type: 'error',
      error_type: err && err.type ? err.type : null,
      code: findCode(err),
      message: findMessage(err),
      error: err,
    });
  });
  conn.bind('message', (m) => {
    if (!m || m.channel) return;
    emit({ type: 'conn_event', event: m.event, data: m.data === undefined ? null : m.data });
    if (m.event === 'pusher:signin_success') {
      let userData = null;
      try {
        userData = JSON.parse(m.data.user_data);
      } catch (e) {
        userData = m.data ? m.data.user_data : null;
      }
      emit({ type: 'signin_success', user_data: userData, data: m.data });
    }
  });
  p.user.bind_global((eventName, data) => {
    emit({ type: 'user_event', event: eventName, data: data === undefined ? null : data });
  });
  try {
    p.user.watchlist.bind_global((eventName, data) => {
      emit({ type: 'watchlist_event', event: eventName, data: data === undefined ? null : data });
    });
  } catch (e) {
    /* older pusher-js: no watchlist */
  }
  p.connect();
  return p;
}

function requireClient(cmdName) {
  if (!pusher) {
    throw new Error('client not created yet: send {"cmd":"connect"} before "' + cmdName + '"');
  }
  return pusher;
}

function requireString(cmd, field) {
  const v = cmd[field];
  if (typeof v !== 'string' || v === '') throw new Error('"' + field + '" must be a non-empty string');
  return v;
}

function stateInfo() {
  if (!pusher) return { created: false, state: null, socket_id: null, channels: [], user: null };
  return {
    created: true,
    state: pusher.connection.state,
    socket_id: pusher.connection.socket_id === undefined ? null : pusher.connection.socket_id,
    channels: pusher.allChannels().map((c) => ({
      name: c.name,
      subscribed: !!c.subscribed,
      pending: !!c.subscriptionPending,
      cancelled: !!c.subscriptionCancelled,
      subscription_count: c.subscriptionCount === undefined ? null : c.subscriptionCount,
      members: c.members ? describeMembers(c.members) : null,
    })),
    user: pusher.user ? pusher.user.user_data : null,
  };
}

// ---------------------------------------------------------------- commands

const handlers = {
  connect() {
    if (!pusher) createClient();
    else pusher.connect();
    return null;
  },
  disconnect() {
    if (pusher) pusher.disconnect();
    return null;
  },
  subscribe(cmd) {
    const p = requireClient('subscribe');
    const ch = p.subscribe(requireString(cmd, 'channel'));
    bindChannel(ch);
    return null;
  },
  unsubscribe(cmd) {
    const p = requireClient('unsubscribe');
    p.unsubscribe(requireString(cmd, 'channel'));
    return null;
  },
  trigger(cmd) {
    const p = requireClient('trigger');
    const name = requireString(cmd, 'channel');
    const event = requireString(cmd, 'event');
    const ch = p.channel(name);
    if (!ch) throw new Error('not subscribed to ' + JSON.stringify(name));
    const result = ch.trigger(event, cmd.data === undefined ? {} : cmd.data);
    emit({ type: 'trigger_result', id: cmd.id, channel: name, event: event, result: result });
    return result;
  },
  signin() {
    requireClient('signin').signin();
    return null;
  },
  send_event(cmd) {
    // Send an arbitrary protocol message through pusher-js's connection.
    const p = requireClient('send_event');
    return p.send_event(requireString(cmd, 'event'), cmd.data === undefined ? {} : cmd.data, cmd.channel);
  },
  send_raw(cmd) {
    // Send an arbitrary text frame on the live socket (string, or object -> JSON).
    const p = requireClient('send_raw');
    const data = typeof cmd.data === 'string' ? cmd.data : JSON.stringify(cmd.data);
    return p.connection.send(data);
  },
  auth_response(cmd) {
    handleAuthResponse(cmd);
    return null;
  },
  raw(cmd) {
    rawEnabled = cmd.enabled === undefined ? true : !!cmd.enabled;
    return rawEnabled;
  },
  state() {
    return stateInfo();
  },
  ping() {
    return 'pong';
  },
  exit() {
    shutdown(0);
    return null;
  },
};

function handleLine(line) {
  line = line.trim();
  if (!line) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    emit({ type: 'driver_error', error: 'invalid JSON: ' + e.message, line: line.slice(0, 500) });
    return;
  }
  if (!cmd || typeof cmd !== 'object' || Array.isArray(cmd)) {
    emit({ type: 'driver_error', error: 'command must be a JSON object', line: line.slice(0, 500) });
    return;
  }
  const name = cmd.cmd;
  const id = cmd.id === undefined ? null : cmd.id;
  if (typeof name !== 'string' || !Object.prototype.hasOwnProperty.call(handlers, name)) {
    emit({ type: 'driver_error', cmd: name === undefined ? null : name, id: id, error: 'unknown command' });
    return;
  }
  try {
    const result = handlers[name](cmd);
    emit({ type: 'ack', cmd: name, id: id, result: result === undefined ? null : result });
  } catch (e) {
    emit({
      type: 'driver_error',
      cmd: name,
      id: id,
      error: findMessage(e) || String(e),
      error_name: errorName(e),
    });
  }
}

// ---------------------------------------------------------------- main loop

let shuttingDown = false;
function shutdown(code) {
  if (shuttingDown) return;
  shuttingDown = true;
  try {
    if (pusher) pusher.disconnect();
  } catch (e) {
    /* ignore */
  }
  emit({ type: 'exiting' });
  // give the close frame a moment, then leave (timers of pusher-js would keep us alive)
  setTimeout(() => process.exit(code), 100).unref();
  setTimeout(() => process.exit(code), 150);
}

process.on('uncaughtException', (e) => {
  emit({ type: 'driver_error', error: 'uncaught: ' + (findMessage(e) || String(e)), fatal: false });
});
process.on('unhandledRejection', (e) => {
  emit({ type: 'driver_error', error: 'unhandled rejection: ' + (findMessage(e) || String(e)), fatal: false });
});
process.on('SIGTERM', () => shutdown(0));
process.on('SIGINT', () => shutdown(0));
process.stdout.on('error', () => process.exit(0)); // parent went away (EPIPE)

const readline = require('readline');
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
rl.on('line', (line) => {
  try {
    handleLine(line);
  } catch (e) {
    emit({ type: 'driver_error', error: 'internal: ' + String(e) });
  }
});
rl.on('close', () => shutdown(0));

emit({
  type: 'ready',
  pusher_js_version: require('pusher-js/package.json').version,
  node_version: process.version,
  host: config.host,
  port: config.port === undefined ? null : config.port,
  key: config.key,
});

if (config.connect) {
  try {
    createClient();
  } catch (e) {
    emit({ type: 'driver_error', cmd: 'connect', error: findMessage(e) || String(e) });
  }
}
