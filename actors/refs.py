"""The actors' refs and proxies, typed, for annotations.

Pykka 4 types a ref by its actor class: ``ChannelActor.start(...)`` is a
``pykka.ActorRef[ChannelActor]`` (``tell`` and ``ask`` take any message), and
``ref.proxy()`` an ``ActorProxy[ChannelActor]``, whose attributes are all
``Any`` to a type checker. So that every module can name a ref without
importing the actor's module (app, channel and connection import each other's
messages), the aliases here are strings at run time and the actor modules are
imported for mypy only::

    from .refs import AppRef, ChannelRef

    channels: dict[str, ChannelRef]

The typed proxies follow ``pykka.typing``: each method the edges ask has the
actor method's own parameters and returns a ``Future`` of its result, so
``app_proxy(ref).usage().get(timeout=2)`` is a ``tuple[int, int]`` to mypy.
At run time :func:`app_proxy` is :func:`~actors.runtime.proxy_of`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias, cast

from .runtime import proxy_of

if TYPE_CHECKING:
    import pykka
    from pykka.typing import ActorMemberMixin, proxy_method

    from .app import AppActor
    from .channel import ChannelActor
    from .connection import ConnectionActor
    from .metrics import MetricsActor
    from .webhooks import WebhookActor

    class AppProxy(ActorMemberMixin, pykka.ActorProxy[AppActor]):
        """What the edges ask an app actor (node, health, HTTP API, webhooks)."""

        channel_info = proxy_method(AppActor.channel_info)
        channel_refs = proxy_method(AppActor.channel_refs)
        channels_info = proxy_method(AppActor.channels_info)
        connection_count = proxy_method(AppActor.connection_count)
        presence_user_counts = proxy_method(AppActor.presence_user_counts)
        local_users = proxy_method(AppActor.local_users)
        presence_users = proxy_method(AppActor.presence_users)
        presence_members = proxy_method(AppActor.presence_members)
        terminate_all = proxy_method(AppActor.terminate_all)
        terminate_user = proxy_method(AppActor.terminate_user)
        usage = proxy_method(AppActor.usage)

    class MetricsProxy(ActorMemberMixin, pykka.ActorProxy[MetricsActor]):
        """What the node asks the metrics actor."""

        flush = proxy_method(MetricsActor.flush)
        totals = proxy_method(MetricsActor.totals)

    class WebhookProxy(ActorMemberMixin, pykka.ActorProxy[WebhookActor]):
        """What the node asks a webhook actor at shutdown."""

        drain = proxy_method(WebhookActor.drain)


__all__ = [
    "AppRef",
    "ChannelRef",
    "ConnectionRef",
    "MetricsRef",
    "WebhookRef",
    "app_proxy",
    "metrics_proxy",
    "webhook_proxy",
]

AppRef: TypeAlias = "pykka.ActorRef[AppActor]"
ChannelRef: TypeAlias = "pykka.ActorRef[ChannelActor]"
ConnectionRef: TypeAlias = "pykka.ActorRef[ConnectionActor]"
MetricsRef: TypeAlias = "pykka.ActorRef[MetricsActor]"
WebhookRef: TypeAlias = "pykka.ActorRef[WebhookActor]"


def app_proxy(ref: AppRef) -> AppProxy:
    """The app actor's proxy (:func:`~actors.runtime.proxy_of`), typed method by method."""
    return cast("AppProxy", proxy_of(ref))


def metrics_proxy(ref: MetricsRef) -> MetricsProxy:
    """The metrics actor's proxy, typed."""
    return cast("MetricsProxy", proxy_of(ref))


def webhook_proxy(ref: WebhookRef) -> WebhookProxy:
    """A webhook actor's proxy, typed."""
    return cast("WebhookProxy", proxy_of(ref))
