"""The Pusher protocol and the I/O around it.

Pure modules (no sockets, no gevent, no pykka): ``errors``, ``config``,
``frames``, ``protocol``, ``names``, ``auth``, ``http_signing``, ``ops_log``, and
the node's settings: ``checks``, ``settings``, ``soketi``.
I/O glue on gevent: ``writer``, ``websocket``, ``server``, ``first_request``,
``bounded_io``, ``tls``, ``routes``, ``metrics_endpoint``.
"""

from .config import App, AppTable
from .errors import ActorcastError, AuthError, ConfigError, HttpError, ProtocolError

__all__ = ["ActorcastError", "App", "AppTable", "AuthError", "ConfigError", "HttpError", "ProtocolError"]
