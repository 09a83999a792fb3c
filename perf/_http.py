"""Broadcasting through the Pusher HTTP API (``POST /apps/{id}/events``).

The node does not serve the HTTP trigger API yet (it arrives with issue 3/6),
so :func:`probe` tries the endpoint once and raises a clear error on 404;
once it exists, :class:`HttpTrigger` signs requests the way Pusher's server
SDKs do and the benchmark uses it unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse

from perf._stats import http_status

__all__ = ["HttpTrigger", "NotAvailable"]


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
