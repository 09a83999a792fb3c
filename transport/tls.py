"""TLS on the node's ports: ``https://`` and ``wss://`` beside nothing else changing.

Data flow: :class:`~transport.server.HttpServer` with a TLS context hands each
accepted socket to a :class:`TlsHandshake` instead of straight to
:class:`~transport.first_request.FirstRequest`. The handshake runs from libev
callbacks (no greenlet, never blocking the hub), bounded by the server's
``header_timeout`` counted from accept; once it is done the same
``FirstRequest`` reads the first request head, under the same deadline.

From then on the rest of the server (HTTP answers, the WebSocket glue, the
lazy writer) sees a :class:`TlsSocket`: a non-blocking ``ssl.SSLSocket``
whose ``recv`` and ``send`` behave like a plain non-blocking socket's, so
none of that code has a TLS branch:

* a record not complete yet, or a full send buffer, raises
  ``BlockingIOError`` (not ``SSLWantReadError`` / ``SSLWantWriteError``);
* ``send`` may send part of its data and returns how much, as ``send`` on a
  TCP socket does. OpenSSL (as Python sets it up) writes all or nothing and
  insists that a write which would block is retried with the same bytes; the
  socket writes in record-sized slices and reports the slices done, so a
  caller that retries from where ``send`` stopped retries exactly the slice
  OpenSSL started;
* ``recv`` returns every byte already decrypted (a whole record at least):
  bytes left inside OpenSSL would not make the descriptor readable again.

Stdlib ``ssl`` rather than ``gevent.ssl``: the node's sockets are plain
non-blocking sockets woken by libev watchers, and gevent's SSL socket only
adds waiting inside ``recv``/``send``, which a libev callback must not do.

Client misbehaviour is one DEBUG line at most: a bad or aborted handshake,
a reset, or silence past the deadline closes the socket. Plain HTTP sent to
the TLS port gets a plain ``400`` saying so, logged as the server logs every
refused request (one rate-limited INFO line, with an ``OpsLog``).
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any, cast

import gevent

from .errors import ConfigError, HttpError
from .watchers import Loop, Watcher

if TYPE_CHECKING:
    from .server import HttpServer

__all__ = ["RECORD_BYTES", "TlsHandshake", "TlsSocket", "tls_context"]

log = logging.getLogger(__name__)

RECORD_BYTES = 16384  # the most plaintext one TLS record carries
_EV_READ, _EV_WRITE = 1, 2
_TLS_HANDSHAKE_RECORD = 0x16  # the first byte of every TLS ClientHello
_PLAIN_HTTP_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # GET, POST, ... sent without TLS
_WOULD_BLOCK = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"
_KEY_MARKER = b"PRIVATE KEY-----"  # PKCS#8 and the older "RSA"/"EC" forms alike


def _would_block() -> BlockingIOError:
    return BlockingIOError(errno.EAGAIN, "TLS: would block")


class TlsSocket(ssl.SSLSocket):
    """A non-blocking server-side TLS socket with plain-socket ``recv``/``send`` semantics.

    Made by :func:`tls_context`'s context (``wrap_socket``); see the module
    docstring for what differs from ``ssl.SSLSocket``.
    """

    def recv(self, buflen: int = RECORD_BYTES, flags: int = 0) -> bytes:
        """Up to a record's worth, or more: everything OpenSSL holds decrypted (b"" at EOF)."""
        try:
            data = self.read(max(buflen, RECORD_BYTES))
            while self.pending():  # never leave bytes behind that no watcher would announce
                data += self.read(self.pending())
        except _WOULD_BLOCK:
            raise _would_block() from None
        except ValueError:  # ssl's word for "closed"
            raise OSError(errno.EBADF, "TLS socket closed") from None
        return data

    def send(self, data: Any, flags: int = 0) -> int:  # Any: ssl's ReadableBuffer has no len() to mypy
        """Send what fits now; like a TCP socket's, the count may be short of ``len(data)``."""
        size = len(data)
        try:
            if size <= RECORD_BYTES:  # a Pusher message, almost always: one record
                return self.write(data)
            view = memoryview(data)
            sent = 0
            try:
                while sent < size:
                    sent += self.write(view[sent:sent + RECORD_BYTES])
            except _WOULD_BLOCK:
                if not sent:
                    raise
            return sent
        except _WOULD_BLOCK:
            raise _would_block() from None
        except ValueError:
            raise OSError(errno.EBADF, "TLS socket closed") from None

    def shutdown(self, how: int) -> None:
        """Shut the TCP connection down, keeping TLS on (``ssl.SSLSocket`` would drop it).

        What the peer still sends is then decrypted and thrown away (the
        server's lingering close), not handed back as raw ciphertext.
        """
        socket.socket.shutdown(self, how)


def tls_context(cert: str | None, key: str | None = None, *, metrics_tls: bool = False) -> ssl.SSLContext | None:
    """The server context for ``cert`` (PEM chain) and ``key`` (PEM; None: the key is in ``cert``).

    None when TLS is off. Raises ConfigError, naming the file, for a file
    that cannot be read, is not PEM, holds an encrypted key, or for a key
    that does not match the certificate; also for a key or ``metrics_tls``
    without a certificate.
    """
    if cert is None:
        if key is not None:
            raise ConfigError(f"a TLS key ({key}) needs a certificate too: give --tls-cert")
        if metrics_tls:
            raise ConfigError("TLS on the metrics port needs a certificate: give --tls-cert and --tls-key")
        return None
    key_file = cert if key is None else key
    _check_pem(cert, "certificate", _CERT_MARKER, "")
    _check_pem(key_file, "key", _KEY_MARKER, ": give the key file too (--tls-key)" if key is None else "")
    try:  # the certificate alone first, so an error names the right file
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError as exc:
        raise ConfigError(f"the TLS certificate file {cert} holds no valid certificate: {exc.reason or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Renegotiation is the one way a write could need a read first: refuse it.
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    context.sslsocket_class = TlsSocket

    def no_passphrase() -> bytes:
        # OpenSSL would otherwise ask for one on the terminal.
        raise ConfigError(f"the TLS key in {key_file} is encrypted: give an unencrypted key file")

    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in reason:
            raise ConfigError(f"the TLS key in {key_file} does not match the certificate in {cert}") from None
        raise ConfigError(f"the TLS key file {key_file} holds no valid private key: {reason}") from None
    except OSError as exc:  # read a moment ago; gone since
        raise ConfigError(f"cannot read the TLS certificate or key ({cert}, {key_file}): {exc.strerror or exc}") from None
    return context


def _check_pem(path: str, what: str, marker: bytes, hint: str) -> None:
    """Fail early and by name: a file that cannot be read, or holds no PEM block of ``what``."""
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20)  # a certificate chain is a few KiB
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS {what} file {path}: {exc.strerror or exc}") from None
    if marker not in text:
        raise ConfigError(f"the TLS {what} file {path} holds no PEM {what} (no {marker.decode()!r} line){hint}")


class TlsHandshake:
    """Runs one accepted socket's TLS handshake from libev callbacks, then reads its first request."""

    __slots__ = ("deadline", "events", "io", "server", "sock", "timer")

    def __init__(self, server: HttpServer, sock: socket.socket) -> None:
        self.server = server
        self.sock: socket.socket = sock  # the plain socket until the ClientHello is in
        timeout = server.limits.header_timeout
        self.deadline = time.monotonic() + timeout  # handshake and first head: one deadline from accept
        loop: Loop = gevent.get_hub().loop
        self.events = _EV_READ
        self.io: Watcher = loop.io(sock.fileno(), _EV_READ)
        self.io.start(self._hello)
        self.timer: Watcher = loop.timer(timeout)
        self.timer.start(self._expired)

    def _hello(self) -> None:
        # Look at the first byte before any TLS: plain HTTP gets a readable answer.
        sock = self.sock
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"client left before its TLS handshake: {exc!r}")
            return
        if not first:
            self._end()  # connected and closed: nothing to say
            return
        if first[0] != _TLS_HANDSHAKE_RECORD:
            if first[0] in _PLAIN_HTTP_START:  # the server logs the refusal as it logs every 4xx
                self._stop_watching()
                self.server.first_request_failed(sock, HttpError(400, "This port speaks TLS: use https:// or wss://"))
            else:
                self._fail("not a TLS handshake")
            return
        context = self.server.tls
        assert context is not None  # only a server with a TLS context hands its sockets to a TlsHandshake
        try:
            self.sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            self._fail(f"client left before its TLS handshake: {exc!r}")
            return
        self.io.stop()
        self.io.start(self._step)
        self._step()

    def _step(self) -> None:
        sock = cast(TlsSocket, self.sock)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(_EV_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(_EV_WRITE)
            return
        except OSError as exc:  # SSLError (bad hello, an alert from the client, ...), resets
            self._fail(f"TLS handshake failed: {getattr(exc, 'reason', None) or exc!r}")
            return
        self._stop_watching()
        first = self.server.read_first_request(sock, self.deadline)
        if sock.pending():  # a request already decrypted: no watcher would announce it
            first._readable()  # the handshake is FirstRequest's helper

    def _watch(self, events: int) -> None:
        if events != self.events:  # a libev watcher's events are fixed: make one for the other direction
            self.io.close()
            self.events = events
            self.io = gevent.get_hub().loop.io(self.sock.fileno(), events)
            self.io.start(self._step)

    def _expired(self) -> None:
        self._fail(f"TLS handshake not done within {self.server.limits.header_timeout:g} s")

    def drop(self) -> None:
        """Close the socket now (the server is stopping)."""
        self._end()

    def _fail(self, why: str) -> None:
        log.debug("%s; closed", why)
        self._end()

    def _end(self) -> None:
        self._stop_watching()
        self.sock.close()

    def _stop_watching(self) -> None:
        self.io.close()
        self.timer.close()
        self.server.forget(self)
