"""The adapter seam: where a publish leaves this node for the others.

Every publish on a node (``Node.broadcast``, the HTTP API, and later
webhooks or server-side events) goes through one adapter's ``publish``.
The :class:`LocalAdapter` here serves a single process: it hands the event
to the app's actor on this node. A cluster adapter (worker processes, Redis)
implements the same three calls, publishing to the other nodes first and
then delivering locally, so nothing else in the node changes.
"""

from __future__ import annotations

from typing import Any, Protocol

from .messages import Publish

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
        self.app_actors[app_id].tell(message)

    def start(self) -> None:
        """Nothing to connect to."""

    def stop(self) -> None:
        """Nothing to disconnect from."""
