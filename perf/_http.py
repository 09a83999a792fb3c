"""Broadcasting through the Pusher HTTP API (``POST /apps/{id}/events``).

The node does not serve the HTTP trigger API yet (it arrives with issue 3/6),
so :func:`probe` tries the endpoint once and raises a clear error on 404;
once it exists, :class:`HttpTrigger` signs requests the way Pusher's server
SDKs do and the benchmark uses it unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
import urllib.parse

from perf._stats import http_status

__all__ = ["ApiClient", "HttpTrigger", "NotAvailable", "signed_query"]


def signed_query(method: str, path: str, key: str, secret: str, body: bytes = b"",
                 params: dict[str, str] | None = None) -> str:
    """The query string (``auth_signature`` included) that signs one Pusher API request.

    Written here from the Pusher spec rather than taken from ``transport``, so
    a signing bug in the node cannot hide behind the same bug in the tool.
    """
    query = dict(params or {}, auth_key=key, auth_timestamp=str(int(time.time())), auth_version="1.0")
    if body:
        query["body_md5"] = hashlib.md5(body).hexdigest()
    joined = "&".join(f"{k}={query[k]}" for k in sorted(query))
    signature = hmac.new(secret.encode(), f"{method}\n{path}\n{joined}".encode(), hashlib.sha256).hexdigest()
    return f"{joined}&auth_signature={signature}"


class ApiClient:
    """Signed Pusher API calls over one kept-alive HTTP/1.1 connection (as SDKs send).

    ``http.client`` sends a request's head and body in one ``send``. Each
    call returns (status, body, seconds from send to the whole answer read).
    """

    def __init__(self, host: str, port: int, app_id: str, key: str, secret: str, timeout: float = 60.0) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.app_id, self.key, self.secret = app_id, key, secret

    def call(self, method: str, what: str, body: bytes = b"", params: dict[str, str] | None = None) -> tuple[int, bytes, float]:
        """``method /apps/{id}/{what}``, signed; reconnects once if the server closed the idle connection."""
        path = f"/apps/{self.app_id}/{what}"
        target = f"{path}?{signed_query(method, path, self.key, self.secret, body, params)}"
        headers = {"Content-Type": "application/json"} if body else {}
        for attempt in (1, 2):
            start = time.perf_counter()
            try:
                self.conn.request(method, target, body=body or None, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, data, time.perf_counter() - start
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def trigger(self, channel: str, event: str, data: str) -> tuple[int, bytes, float]:
        """``POST /apps/{id}/events`` for one channel."""
        body = json.dumps({"name": event, "channel": channel, "data": data}).encode()
        return self.call("POST", "events", body)

    def close(self) -> None:
        self.conn.close()


class NotAvailable(RuntimeError):
    """The node has no HTTP trigger API."""


class HttpTrigger:
    """Signed ``POST /apps/{id}/events`` calls against ``http://host:port``."""

    def __init__(self, base: str, app_id: str, key: str, secret: str) -> None:
        self.base, self.app_id, self.key, self.secret = base.rstrip("/"), app_id, key, secret
        self.path = f"/apps/{app_id}/events"

    def _url(self, body: bytes) -> str:
        params = {
            "auth_key": self.key,
            "auth_timestamp": str(int(time.time())),
            "auth_version": "1.0",
            "body_md5": hashlib.md5(body).hexdigest(),
        }
        query = "&".join(f"{k}={params[k]}" for k in sorted(params))
        to_sign = f"POST\n{self.path}\n{query}"
        signature = hmac.new(self.secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{self.base}{self.path}?{query}&auth_signature={urllib.parse.quote(signature)}"

    def trigger(self, channels: list[str], event: str, data: str) -> tuple[int, bytes]:
        body = json.dumps({"name": event, "channels": channels, "data": data}).encode()
        return http_status(self._url(body), body)

    def probe(self) -> None:
        """Raise NotAvailable unless the endpoint exists (any answer but 404 / refused)."""
        try:
            status, text = self.trigger(["perf-probe"], "perf-probe", "{}")
        except OSError as exc:
            raise NotAvailable(f"cannot reach {self.base}: {exc}") from exc
        if status == 404:
            raise NotAvailable(
                f"--via http is not available yet: the HTTP trigger API arrives with issue 3/6 "
                f"(POST {self.path} answered 404: {text[:80]!r}). Use --via python (the default)."
            )
