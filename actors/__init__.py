"""actorcast: a Pusher Channels server as an actor system on Pykka and gevent.

The public API::

    from actors import App, Node

    node = Node(apps=[App(id="1", key="app-key", secret="app-secret")], port=0).start()
    node.broadcast("1", ["news"], "headline", {"title": "hello"})
    node.stop()

Actors: ``AppActor`` (one app's channel table), ``ChannelActor`` (one
channel's subscribers), ``ConnectionActor`` (one client), ``MetricsActor``
(counters), all running on ``GeventActor``, our gevent runtime for Pykka.
"""

__version__ = "0.1.0"  # the one place it is written: setup.py reads it from here

from transport.config import App
from transport.errors import (
    ActorcastError,
    AuthError,
    ConfigError,
    HttpError,
    ProtocolError,
)

from .adapter import Adapter, LocalAdapter
from .app import AppActor
from .channel import ChannelActor
from .connection import ConnectionActor
from .hub import HubThread
from .metrics import MetricsActor
from .node import Node
from .runtime import GeventActor, GeventFuture

__all__ = [
    "ActorcastError",
    "Adapter",
    "App",
    "AppActor",
    "AuthError",
    "ChannelActor",
    "ConfigError",
    "ConnectionActor",
    "GeventActor",
    "GeventFuture",
    "HttpError",
    "HubThread",
    "LocalAdapter",
    "MetricsActor",
    "Node",
    "ProtocolError",
    "__version__",
]
