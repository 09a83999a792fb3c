"""The adapter seam: where a publish leaves this node for the others.

Every publish on a node (``Node.broadcast``, the HTTP API, and later
webhooks or server-side events) goes through one adapter's ``publish``.
The :class:`LocalAdapter` here serves a single process: it hands the event
to the app's actor on this node. A cluster adapter (worker processes, Redis)
implements the same three calls, publishing to the other nodes first and
then delivering locally, so nothing else in the node changes.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from .messages import Publish
from .runtime import tell_if_alive

log = logging.getLogger(__name__)

__all__ = ["Adapter", "LocalAdapter"]


class Adapter(Protocol):
    """How a node delivers events and learns about channels across nodes."""

    def publish(self, app_id: str, message: Publish) -> None:
        """Deliver ``message`` to subscribers on every node (must not block)."""

    def start(self) -> None:
        """Connect (called on the node's hub when the node starts)."""

    def stop(self) -> None:
        """Disconnect (called on the node's hub when the node stops)."""


class LocalAdapter:
    """One node, no peers: publishing is telling this node's app actor."""

    def __init__(self, app_actors: dict[str, Any]) -> None:
        self.app_actors = app_actors

    def publish(self, app_id: str, message: Publish) -> None:
        ref = self.app_actors.get(app_id)
        if ref is None or not tell_if_alive(ref, message):
            # Only during shutdown, after the node stopped taking work: the
            # caller was refused already (503 / ActorcastError).
            log.debug("publish to app %s after its actor stopped; dropped", app_id)

    def start(self) -> None:
        """Nothing to connect to."""

    def stop(self) -> None:
        """Nothing to disconnect from."""
