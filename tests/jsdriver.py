"""Drive the official ``pusher-js`` client and ``pusher`` Node SDK from pytest.

Install once (CI should do it before running pytest)::

    npm ci --prefix tests/js        # exact versions from tests/js/package-lock.json

``ensure_node_modules()`` does the same on demand (``npm ci``, falling back to
``npm install``) when tests/js/node_modules is missing or holds other versions.

Pinned: pusher-js 8.6.0 (client; its node build bundles tweetnacl for private-encrypted-
channels), pusher 5.3.4 (server SDK), laravel-echo 2.5.0 (run by tests/e2e/test_readme_snippets.py;
it needs Node ^20.19 or >=22.12).

Typical use::

    import pusher
    from tests.jsdriver import PusherJsClient, sdk_signer, server_sdk

    sign = sdk_signer("1", "app-key", "app-secret",
                      presence_data={"user_id": "u1", "user_info": {"name": "A"}},
                      user_data={"id": "u1"})
    with PusherJsClient("127.0.0.1", port, "app-key", auto_auth=sign) as c:
        sid = c.expect("connected")["socket_id"]
        c.subscribe("presence-room")
        ok = c.expect_event("presence-room", "pusher:subscription_succeeded")
        assert ok["data"]["me"]["id"] == "u1"
        status, body = server_sdk("127.0.0.1", port, "1", "app-key", "app-secret",
                                  "trigger", "presence-room", "greet", {"hi": 1})
        assert status == 200
        ev = c.expect_event("presence-room", "greet")
        assert ev["data"] == {"hi": 1}

Driver protocol (tests/js/client.js)
====================================

One JSON object per line in both directions. stdout lines are flushed as written.

Start options (``PusherJsClient`` keyword -> client.js flag)
------------------------------------------------------------
``host``/``port``/``key`` -> ``--host --port --key``;
``activity_timeout``/``pong_timeout``/``unavailable_timeout`` (ms) -> pusher-js options of
those names; ``auth_timeout`` (ms, default 10000): how long a pending auth request
waits for ``auth_response`` before failing with an error; ``connect=False`` ->
``--no-connect`` (create the pusher-js client only at the first ``connect``
command); ``raw=True`` -> ``--raw`` (report every websocket frame);
``options`` (dict) -> ``--options JSON`` merged last into ``new Pusher(key, {...})``;
``debug=True`` -> pusher-js log on stderr. Base pusher-js options: ``{wsHost, wsPort,
wssPort, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
cluster: 'mt1', channelAuthorization: {customHandler}, userAuthentication:
{customHandler}}``. Environment fallbacks: PUSHER_HOST, PUSHER_PORT, PUSHER_KEY, ...

Commands (stdin). Every command may carry ``"id"``; it is echoed back.
------------------------------------------------------------------------
``{"cmd":"connect"}``                       create the client (first time) or ``pusher.connect()``
``{"cmd":"disconnect"}``                    ``pusher.disconnect()``
``{"cmd":"subscribe","channel":C}``         ``pusher.subscribe(C)`` + ``bind_global`` reporting
``{"cmd":"unsubscribe","channel":C}``       ``pusher.unsubscribe(C)``
``{"cmd":"trigger","channel":C,"event":E,"data":D}``
                                            ``channel.trigger(E, D)`` (client event); the
                                            boolean is in the ack ``result`` and in a
                                            ``trigger_result`` event
``{"cmd":"signin"}``                        ``pusher.signin()``
``{"cmd":"auth_response","id":A,"auth":..,"channel_data"?:..,"shared_secret"?:..,
  "user_data"?:..}`` or ``{"cmd":"auth_response","id":A,"error":"msg"}``
                                            answer auth request A (channel_data /
                                            user_data: string, or object -> JSON)
``{"cmd":"send_event","event":E,"data":D,"channel"?:C}``
                                            ``pusher.send_event`` (any protocol message)
``{"cmd":"send_raw","data":S_or_obj}``      send one raw text frame on the live socket
``{"cmd":"raw","enabled":bool}``            toggle raw frame reporting
``{"cmd":"state"}``                         ack result = {created, state, socket_id,
                                            channels:[{name, subscribed, pending, cancelled,
                                            subscription_count, members}], user}
``{"cmd":"ping"}``                          ack with result "pong" (liveness / barrier)
``{"cmd":"exit"}``                          disconnect and exit (EOF on stdin does the same)

Each known command answers ``{"type":"ack","cmd":..,"id":..,"result":..}`` after it was
applied; a failing, unknown or malformed command answers
``{"type":"driver_error","cmd"?:..,"id"?:..,"error":"...","error_name"?:..}``
(e.g. pusher-js throwing BadEventName for a non ``client-`` trigger). The driver never
exits on a bad command; uncaught JS errors are reported as driver_error too.

Events (stdout)
---------------
``{"type":"ready","pusher_js_version","node_version","host","port","key"}``  first line
``{"type":"state","previous":P,"current":S}``   pusher-js connection state changes
                                                 (initialized, connecting, connected,
                                                 unavailable, failed, disconnected)
``{"type":"connected","socket_id":..}``
``{"type":"connecting_in","seconds":n}``          pusher-js retry scheduled
``{"type":"error","error_type":..,"code":n|null,"message":..,"error":{...}}``
        pusher-js connection ``error`` event; ``code`` is the pusher:error code or the
        close code (4000-4399) when pusher-js exposes it
``{"type":"socket_open_attempt"|"socket_open","socket":n,"url":..}``
``{"type":"socket_closed","socket":n,"code":..,"reason":..,"wasClean":..}``
        every websocket close with the exact close code (also during the handshake)
``{"type":"socket_error","socket":n,"message":..}``
``{"type":"raw","direction":"in"|"out","socket":n,"data":"<frame text>"}``  with raw on
``{"type":"event","channel":C,"event":E,"data":D,"user_id"?:..}``
        everything pusher-js emits on a subscribed channel (bind_global): app and client
        events (data already parsed by pusher-js), pusher:subscription_succeeded (data
        for presence: {"me":{id,info},"myID","count","members":[{id,info}]}),
        pusher:subscription_error (e.g. {"type":"AuthError","error":..,"status"?}),
        pusher:member_added / pusher:member_removed ({"id","info"}),
        pusher:cache_miss, pusher:subscription_count ({"subscription_count":n})
``{"type":"conn_event","event":E,"data":D}``   connection-level messages (no channel),
                                               e.g. pusher:error, pusher:signin_success,
                                               pusher:pong
``{"type":"signin_success","user_data":{parsed},"data":{"user_data":"<string>"}}``
``{"type":"user_event","event":E,"data":D}``    ``pusher.user.bind_global``: events sent to
                                               ``#server-to-user-{id}``, and
                                               pusher:signin_error
``{"type":"watchlist_event","event":E,"data":D}``
``{"type":"auth_request","id":A,"kind":"channel"|"user","socket_id":..,"channel_name"?:..}``
``{"type":"auth_timeout","id":A,"kind":..}``     nobody answered in time
``{"type":"trigger_result","id":..,"channel":C,"event":E,"result":bool}``
``{"type":"ack",...}`` / ``{"type":"driver_error",...}`` / ``{"type":"exiting"}``

Server SDK (tests/js/server_sdk.js)
-----------------------------------
``node server_sdk.js '{"host","port","appId","key","secret","method","args":[...],
"options"?:{}}'`` -> one line ``{"status":..,"body":..,"error"?:..,"code"?:..}``;
methods: trigger [channel(s), event, data, params?], triggerBatch [[events]],
get [{path, params?}], post [{path, params?, body?}], terminateUserConnections [userId],
sendToUser [userId, event, data]. ``status`` is null when no HTTP response was received
(``code`` e.g. "ECONNREFUSED") or the SDK threw before sending (``exception``: true).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

__all__ = [
    "JS_DIR",
    "DriverError",
    "DriverExited",
    "ExpectTimeout",
    "PusherJsClient",
    "ensure_node_modules",
    "node_binary",
    "sdk_signer",
    "server_sdk",
    "server_sdk_result",
]

JS_DIR = Path(__file__).resolve().parent / "js"
CLIENT_JS = JS_DIR / "client.js"
SERVER_SDK_JS = JS_DIR / "server_sdk.js"

Predicate = Union[str, Callable[[Dict[str, Any]], bool], None]


class DriverError(AssertionError):
    """The driver could not be set up or answered a command with driver_error."""


class DriverExited(DriverError):
    """The node process ended while we were waiting for an event."""


class ExpectTimeout(AssertionError):
    """No matching event arrived within the timeout."""


# --------------------------------------------------------------------------- setup


def node_binary() -> str:
    node = os.environ.get("NODE") or shutil.which("node")
    if not node:
        raise DriverError("node is not installed (needed for the pusher-js e2e tests)")
    return node


def _required_versions() -> Dict[str, str]:
    pkg = json.loads((JS_DIR / "package.json").read_text())
    return dict(pkg.get("dependencies", {}))


def _installed_ok() -> bool:
    nm = JS_DIR / "node_modules"
    for name, version in _required_versions().items():
        pj = nm / name / "package.json"
        try:
            if json.loads(pj.read_text()).get("version") != version:
                return False
        except (OSError, ValueError):
            return False
    return True


_install_lock = threading.Lock()


def ensure_node_modules(timeout: float = 600.0) -> Path:
    """Make sure tests/js/node_modules holds the pinned packages; return its path.

    Runs ``npm ci`` (``npm install`` when there is no lock file or ``npm ci`` fails)
    in tests/js when needed. Safe to call from several processes at once.
    """
    nm = JS_DIR / "node_modules"
    if _installed_ok():
        return nm
    npm = shutil.which("npm")
    if not npm:
        raise DriverError("npm is not installed; run `npm ci --prefix tests/js`")
    with _install_lock:
        lock_fd = None
        try:
            import fcntl  # POSIX only

            lock_fd = os.open(str(JS_DIR / ".npm-install.lock"), os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            lock_fd = None
        try:
            if _installed_ok():
                return nm
            deadline = time.monotonic() + timeout
            attempts: List[List[str]] = []
            if (JS_DIR / "package-lock.json").exists():
                attempts.append([npm, "ci", "--no-audit", "--no-fund"])
            attempts.append([npm, "install", "--no-audit", "--no-fund"])
            outputs = []
            for argv in attempts:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    proc = subprocess.run(
                        argv,
                        cwd=str(JS_DIR),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        timeout=left,
                        text=True,
                    )
                except subprocess.TimeoutExpired:
                    outputs.append(f"{' '.join(argv[1:2])}: timed out")
                    continue
                outputs.append(f"{' '.join(argv[1:2])} (rc={proc.returncode}): {proc.stdout[-2000:]}")
                if proc.returncode == 0 and _installed_ok():
                    return nm
            raise DriverError("could not install tests/js node_modules:\n" + "\n".join(outputs))
        finally:
            if lock_fd is not None:
                try:
                    os.close(lock_fd)
                except OSError:
                    pass


# --------------------------------------------------------------------------- signing


def sdk_signer(
    app_id: str,
    key: str,
    secret: str,
    presence_data: Union[None, Dict[str, Any], Callable[[Dict[str, Any]], Dict[str, Any]]] = None,
    user_data: Union[None, Dict[str, Any], Callable[[Dict[str, Any]], Dict[str, Any]]] = None,
    **pusher_kwargs: Any,
) -> Callable[[Dict[str, Any]], Dict[str, Any]]:
    """An ``auto_auth`` callable that signs with the official python ``pusher`` SDK.

    ``presence_data`` (``{"user_id":..,"user_info":..}``) and ``user_data``
    (``{"id":..,...}``) may be dicts or callables taking the auth_request dict.
    Extra keyword arguments go to ``pusher.Pusher`` (e.g.
    ``encryption_master_key_base64`` for private-encrypted channels).
    """
    import pusher  # the python SDK; imported lazily

    client = pusher.Pusher(app_id=str(app_id), key=key, secret=secret, **pusher_kwargs)

    def _value(v, req):
        return v(req) if callable(v) else v

    def sign(req: Dict[str, Any]) -> Dict[str, Any]:
        socket_id = req["socket_id"]
        if req.get("kind") == "user":
            data = _value(user_data, req)
            if data is None:
                return {"error": "no user_data configured for sign-in"}
            return client.authenticate_user(socket_id, data)
        channel = req["channel_name"]
        if channel.startswith("presence-"):
            data = _value(presence_data, req)
            if data is None:
                return {"error": "no presence_data configured"}
            return client.authenticate(channel, socket_id, data)
        answer = dict(client.authenticate(channel, socket_id))
        if isinstance(answer.get("shared_secret"), bytes):
            # pusher-http-python 3.3 returns the encrypted channel's secret as bytes.
            answer["shared_secret"] = answer["shared_secret"].decode("ascii")
        return answer

    return sign


# --------------------------------------------------------------------------- client driver


def _matcher(pred: Predicate, fields: Dict[str, Any]) -> Callable[[Dict[str, Any]], bool]:
    def match(ev: Dict[str, Any]) -> bool:
        if isinstance(pred, str):
            if ev.get("type") != pred:
                return False
        elif pred is not None and not pred(ev):
            return False
        for k, v in fields.items():
            if ev.get(k, _MISSING) != v:
                return False
        return True

    return match


_MISSING = object()
_EOF = object()


class PusherJsClient:
    """One pusher-js client in a ``node tests/js/client.js`` process.

    ``auto_auth``: callable(auth_request dict) -> response dict (``{"auth":..,
    "channel_data"?:..}``, ``{"auth":..,"user_data":..}`` or ``{"error":"msg"}``),
    called on the reader thread for every auth_request; return None to answer it
    yourself with ``auth_response()``. Exceptions become ``{"error": str(exc)}``.

    Events are kept in ``events`` (everything, in order). ``expect`` consumes the
    first matching event not yet consumed by an earlier ``expect``; other events stay
    available for later expects.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        key: str = "app-key",
        *,
        auto_auth: Optional[Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]] = None,
        activity_timeout: Optional[int] = None,
        pong_timeout: Optional[int] = None,
        unavailable_timeout: Optional[int] = None,
        auth_timeout: Optional[int] = None,
        connect: bool = True,
        raw: bool = False,
        options: Optional[Dict[str, Any]] = None,
        debug: bool = False,
        env: Optional[Dict[str, str]] = None,
        start_timeout: float = 15.0,
        install: bool = True,
    ) -> None:
        if install:
            ensure_node_modules()
        self.host, self.port, self.key = host, port, key
        self.auto_auth = auto_auth
        self.events: List[Dict[str, Any]] = []
        self.stderr_lines: deque = deque(maxlen=200)
        self._pending: List[Dict[str, Any]] = []
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._send_lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._next_id = 0
        self._eof = False
        self._closed = False

        argv = [node_binary(), str(CLIENT_JS), "--host", str(host), "--port", str(port), "--key", str(key)]
        for flag, val in (
            ("--activity-timeout", activity_timeout),
            ("--pong-timeout", pong_timeout),
            ("--unavailable-timeout", unavailable_timeout),
            ("--auth-timeout", auth_timeout),
        ):
            if val is not None:
                argv += [flag, str(int(val))]
        if not connect:
            argv.append("--no-connect")
        if raw:
            argv.append("--raw")
        if debug:
            argv.append("--debug")
        if options:
            argv += ["--options", json.dumps(options)]
        proc_env = dict(os.environ)
        for k in list(proc_env):
            if k.startswith("PUSHER_"):
                del proc_env[k]  # flags only: no surprises from the caller's environment
        if env:
            proc_env.update(env)
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            cwd=str(JS_DIR),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=proc_env,
            bufsize=0,
        )
        self._reader = threading.Thread(target=self._read_stdout, name="pusherjs-stdout", daemon=True)
        self._err_reader = threading.Thread(target=self._read_stderr, name="pusherjs-stderr", daemon=True)
        self._reader.start()
        self._err_reader.start()
        try:
            self.ready = self.expect("ready", timeout=start_timeout)
        except BaseException:
            self.close()
            raise

    # ---- context manager

    def __enter__(self) -> "PusherJsClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; tests should use `with` or close()
        try:
            if not self._closed and self.proc.poll() is None:
                self.proc.kill()
        except Exception:
            pass

    # ---- reader threads

    def _read_stdout(self) -> None:
        stream = self.proc.stdout
        try:
            for raw_line in iter(stream.readline, b""):
                line = raw_line.decode("utf-8", "replace").strip()
                if not line:
                    continue
                try:
                    ev = json.loads(line)
                    if not isinstance(ev, dict):
                        raise ValueError("not an object")
                except ValueError:
                    ev = {"type": "unparsed", "line": line}
                with self._events_lock:
                    self.events.append(ev)
                self._queue.put(ev)
                if ev.get("type") == "auth_request" and self.auto_auth is not None:
                    self._auto_answer(ev)
        except Exception as exc:  # pragma: no cover - defensive
            self._queue.put({"type": "reader_error", "error": repr(exc)})
        finally:
            self._queue.put(_EOF)

    def _auto_answer(self, req: Dict[str, Any]) -> None:
        try:
            resp = self.auto_auth(req)
        except Exception as exc:
            resp = {"error": f"auto_auth raised {exc!r}"}
        if resp is None:
            return
        try:
            self.auth_response(req["id"], **resp)
        except DriverExited:
            pass  # process gone: nobody is waiting for the answer
        except Exception as exc:  # answer fast rather than let pusher-js time out
            self.auth_response(req["id"], error=f"auth_response failed: {exc!r}")

    def _read_stderr(self) -> None:
        try:
            for raw_line in iter(self.proc.stderr.readline, b""):
                self.stderr_lines.append(raw_line.decode("utf-8", "replace").rstrip("\n"))
        except Exception:
            pass

    # ---- sending

    def send(self, cmd: Dict[str, Any]) -> Dict[str, Any]:
        """Write one command line (no waiting). Returns the command sent."""
        data = (json.dumps(cmd) + "\n").encode()
        with self._send_lock:
            if self.proc.poll() is not None:
                raise DriverExited(f"node driver exited with {self.proc.returncode}; {self._diag()}")
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise DriverExited(f"cannot write to node driver: {exc!r}; {self._diag()}") from exc
        return cmd

    def new_id(self) -> str:
        with self._send_lock:
            self._next_id += 1
            return f"py-{self._next_id}"

    def request(self, cmd: Dict[str, Any], timeout: float = 5.0, check: bool = True) -> Dict[str, Any]:
        """Send a command with a fresh id and wait for its ack (or driver_error).

        Returns the ack (or the driver_error event when ``check`` is False).
        """
        cmd = dict(cmd)
        cmd.setdefault("id", self.new_id())
        self.send(cmd)
        cid = cmd["id"]
        ev = self.expect(lambda e: e.get("type") in ("ack", "driver_error") and e.get("id") == cid, timeout=timeout)
        if ev["type"] == "driver_error" and check:
            raise DriverError(f"driver_error for {cmd}: {ev}")
        return ev

    # ---- waiting

    def _pump(self, timeout: float) -> bool:
        """Move queued events into the pending buffer; wait up to timeout for one."""
        got = False
        try:
            item = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        while True:
            if item is _EOF:
                self._eof = True
            else:
                self._pending.append(item)
                got = True
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return got

    def _take(self, match: Callable[[Dict[str, Any]], bool]) -> Optional[Dict[str, Any]]:
        for i, ev in enumerate(self._pending):
            if match(ev):
                return self._pending.pop(i)
        return None

    def expect(self, pred: Predicate = None, timeout: float = 5.0, **fields: Any) -> Dict[str, Any]:
        """Wait (at most ``timeout`` s) for an event matching ``pred`` and ``fields``.

        ``pred``: an event type string, a callable(event) -> bool, or None (any event).
        ``fields``: exact values required, e.g. ``expect("event", channel="c")``.
        The matched event is consumed; unmatched events stay for later expects.
        """
        match = _matcher(pred, fields)
        deadline = time.monotonic() + timeout
        self._pump(0)
        while True:
            ev = self._take(match)
            if ev is not None:
                return ev
            left = deadline - time.monotonic()
            if self._eof:
                raise DriverExited(
                    f"node driver exited (rc={self.proc.poll()}) before an event matching "
                    f"{self._describe(pred, fields)}; {self._diag()}"
                )
            if left <= 0:
                raise ExpectTimeout(
                    f"no event matching {self._describe(pred, fields)} within {timeout}s; {self._diag()}"
                )
            self._pump(min(left, 0.5))

    def expect_event(self, channel: str, event: str, timeout: float = 5.0, **fields: Any) -> Dict[str, Any]:
        """Wait for ``{"type":"event","channel":channel,"event":event}``."""
        return self.expect("event", timeout=timeout, channel=channel, event=event, **fields)

    def expect_no(self, pred: Predicate = None, within: float = 0.5, **fields: Any) -> None:
        """Assert that no (unconsumed) matching event exists or arrives within ``within`` s."""
        match = _matcher(pred, fields)
        deadline = time.monotonic() + within
        self._pump(0)
        while True:
            for ev in self._pending:
                if match(ev):
                    raise AssertionError(f"unexpected event {ev}")
            left = deadline - time.monotonic()
            if left <= 0 or self._eof:
                return
            self._pump(min(left, 0.1))

    def drain(self) -> List[Dict[str, Any]]:
        """Consume and return every event received so far but not yet expected."""
        self._pump(0)
        out, self._pending = self._pending, []
        return out

    def pending(self) -> List[Dict[str, Any]]:
        """Events received but not consumed yet (without consuming them)."""
        self._pump(0)
        return list(self._pending)

    # ---- convenience commands (each waits for the driver's ack)

    def connect(self, timeout: float = 5.0) -> Dict[str, Any]:
        return self.request({"cmd": "connect"}, timeout)

    def wait_connected(self, timeout: float = 10.0) -> str:
        """Wait for a ``connected`` event; return the socket_id."""
        return self.expect("connected", timeout=timeout)["socket_id"]

    def disconnect(self, timeout: float = 5.0) -> Dict[str, Any]:
        return self.request({"cmd": "disconnect"}, timeout)

    def subscribe(self, channel: str, timeout: float = 5.0) -> Dict[str, Any]:
        return self.request({"cmd": "subscribe", "channel": channel}, timeout)

    def unsubscribe(self, channel: str, timeout: float = 5.0) -> Dict[str, Any]:
        return self.request({"cmd": "unsubscribe", "channel": channel}, timeout)

    def trigger(self, channel: str, event: str, data: Any = None, timeout: float = 5.0) -> bool:
        """Client event via ``channel.trigger``; returns pusher-js's boolean result."""
        ack = self.request({"cmd": "trigger", "channel": channel, "event": event, "data": data}, timeout)
        return bool(ack["result"])

    def signin(self, timeout: float = 5.0) -> Dict[str, Any]:
        return self.request({"cmd": "signin"}, timeout)

    def state(self, timeout: float = 5.0) -> Dict[str, Any]:
        return self.request({"cmd": "state"}, timeout)["result"]

    def ping(self, timeout: float = 5.0) -> None:
        self.request({"cmd": "ping"}, timeout)

    def auth_response(self, request_id: str, **resp: Any) -> None:
        """Answer an auth_request (``auth=..., channel_data=...`` / ``user_data=...`` / ``error=...``)."""
        cmd = {"cmd": "auth_response", "id": request_id}
        cmd.update(resp)
        self.send(cmd)

    # ---- teardown

    def close(self, timeout: float = 3.0) -> None:
        """Stop the node process (EOF, then kill); idempotent."""
        if self._closed:
            return
        self._closed = True
        proc = self.proc
        try:
            if proc.poll() is None:
                try:
                    with self._send_lock:
                        proc.stdin.close()
                except Exception:
                    pass
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=timeout)
        except Exception:
            try:
                proc.kill()
            except Exception:
                pass
        finally:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    if stream:
                        stream.close()
                except Exception:
                    pass
            self._reader.join(timeout=1.0)
            self._err_reader.join(timeout=1.0)

    # ---- diagnostics

    @staticmethod
    def _describe(pred: Predicate, fields: Dict[str, Any]) -> str:
        base = repr(pred) if isinstance(pred, str) or pred is None else getattr(pred, "__name__", "predicate")
        return base + (f" with {fields}" if fields else "")

    def _diag(self) -> str:
        with self._events_lock:
            recent = self.events[-15:]
        lines = "\n  ".join(json.dumps(e)[:400] for e in recent)
        err = "\n  ".join(list(self.stderr_lines)[-10:])
        return f"last events:\n  {lines}\nstderr:\n  {err}"


# --------------------------------------------------------------------------- server SDK


def server_sdk_result(
    host: str,
    port: int,
    app_id: str,
    key: str,
    secret: str,
    method: str,
    *args: Any,
    timeout: float = 20,
    options: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Run tests/js/server_sdk.js once; return its whole result dict."""
    ensure_node_modules()
    req = {
        "host": host,
        "port": port,
        "appId": str(app_id),
        "key": key,
        "secret": secret,
        "method": method,
        "args": list(args),
    }
    if options:
        req["options"] = options
    # keep the SDK's own request timeout below ours so it reports cleanly
    req.setdefault("options", {})
    req["options"].setdefault("timeout", max(1000, int((timeout - 2) * 1000)))
    try:
        proc = subprocess.run(
            [node_binary(), str(SERVER_SDK_JS), json.dumps(req)],
            cwd=str(JS_DIR),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
            text=True,
        )
    except subprocess.TimeoutExpired as exc:
        raise ExpectTimeout(f"server_sdk.js {method} did not finish within {timeout}s") from exc
    for line in reversed(proc.stdout.strip().splitlines()):
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict) and "status" in result:
            return result
    raise DriverError(
        f"server_sdk.js {method} printed no result (rc={proc.returncode}): "
        f"stdout={proc.stdout[-1000:]!r} stderr={proc.stderr[-1000:]!r}"
    )


def server_sdk(
    host: str,
    port: int,
    app_id: str,
    key: str,
    secret: str,
    method: str,
    *args: Any,
    timeout: float = 20,
    options: Optional[Dict[str, Any]] = None,
) -> Tuple[Optional[int], Any]:
    """Call the official ``pusher`` Node SDK once; return ``(status, body)``.

    ``body`` is the parsed JSON (or text) of the response, also for HTTP errors.
    When no HTTP response was received, ``status`` is None and ``body`` is
    ``{"error": ..., "code": ..., "exception"?: true}``.
    """
    result = server_sdk_result(host, port, app_id, key, secret, method, *args, timeout=timeout, options=options)
    status = result.get("status")
    if status is None:
        return None, {k: v for k, v in result.items() if k not in ("status", "body")}
    return status, result.get("body")
