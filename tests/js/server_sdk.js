#!/usr/bin/env node
'use strict';
/*
 * One-shot CLI around the official `pusher` Node SDK, for the Python tests.
 *
 *   node server_sdk.js '<json>'        (or the JSON on stdin when no argument)
 *
 * JSON: {"host": "127.0.0.1", "port": 8080, "appId": "1", "key": "app-key",
 *        "secret": "app-secret", "method": "trigger", "args": [...],
 *        "options"?: {...extra new Pusher({...}) options, e.g. "timeout": 5000}}
 *
 * method / args (passed positionally to the SDK method):
 *   trigger                   [channel | [channels], event, data, params?]
 *   triggerBatch              [[{channel, name, data, socket_id?, info?}, ...]]
 *   get                       [{path, params?}]          path relative to /apps/{appId}
 *   post                      [{path, params?, body?}]
 *   terminateUserConnections  [userId]
 *   sendToUser                [userId, event, data]
 *
 * Prints exactly one JSON line on stdout:
 *   success:            {"status": 200, "body": <parsed JSON body, or text>}
 *   HTTP error (>=400): {"status": 4xx/5xx, "body": <parsed JSON, or text>, "error": "..."}
 *   no HTTP response:   {"status": null, "body": null, "error": "...", "code": "ECONNREFUSED"|...}
 *   SDK threw (e.g. validation) or bad input:
 *                       {"status": null, "body": null, "error": "...", "exception": true}
 * Exit code 0 whenever that line was printed.
 */

const SUPPORTED = ['trigger', 'triggerBatch', 'get', 'post', 'terminateUserConnections', 'sendToUser'];

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function parseBody(text) {
  if (text === undefined || text === null) return null;
  if (text === '') return '';
  try {
    return JSON.parse(text);
  } catch (e) {
    return text;
  }
}

function errorCode(err) {
  let e = err;
  for (let i = 0; e && i < 5; i++) {
    if (typeof e.code === 'string' || typeof e.code === 'number') return e.code;
    if (typeof e.errno === 'string') return e.errno;
    e = e.error || e.cause;
  }
  if (err && err.error && err.error.type) return err.error.type; // node-fetch FetchError type, e.g. "aborted"
  return null;
}

function describe(err) {
  if (!err) return String(err);
  let msg = err.message || String(err);
  if (err.error && err.error.message && err.error.message !== msg) msg += ': ' + err.error.message;
  return msg;
}

async function main() {
  let raw = process.argv[2];
  if (raw === undefined) {
    raw = require('fs').readFileSync(0, 'utf8');
  }
  let req;
  try {
    req = JSON.parse(raw);
  } catch (e) {
    out({ status: null, body: null, error: 'invalid JSON argument: ' + e.message, exception: true });
    return;
  }
  if (!req || typeof req !== 'object') {
    out({ status: null, body: null, error: 'argument must be a JSON object', exception: true });
    return;
  }
  const method = req.method;
  if (!SUPPORTED.includes(method)) {
    out({ status: null, body: null, error: 'unsupported method: ' + JSON.stringify(method), exception: true });
    return;
  }
  const args = Array.isArray(req.args) ? req.args : req.args === undefined ? [] : [req.args];

  let Pusher;
  let client;
  try {
    Pusher = require('pusher');
    const options = Object.assign(
      {
        appId: String(req.appId),
        key: req.key,
        secret: req.secret,
        host: req.host || '127.0.0.1',
        port: req.port === undefined || req.port === null ? undefined : String(req.port),
        useTLS: false,
        timeout: 15000,
      },
      req.options || {}
    );
    client = new Pusher(options);
  } catch (e) {
    out({ status: null, body: null, error: 'creating client: ' + describe(e), exception: true });
    return;
  }

  let res;
  try {
    res = await client[method](...args);
  } catch (err) {
    if (err && typeof err.status === 'number') {
      out({ status: err.status, body: parseBody(err.body), error: describe(err) });
    } else if (err && err.name === 'PusherRequestError') {
      out({ status: null, body: null, error: describe(err), code: errorCode(err) });
    } else {
      out({ status: null, body: null, error: describe(err), exception: true });
    }
    return;
  }
  let text = null;
  try {
    text = await res.text();
  } catch (e) {
    out({ status: res.status, body: null, error: 'reading body: ' + describe(e) });
    return;
  }
  out({ status: res.status, body: parseBody(text) });
}

main().then(
  () => process.exit(0),
  (e) => {
    out({ status: null, body: null, error: 'internal: ' + String(e), exception: true });
    process.exit(0);
  }
);
