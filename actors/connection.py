"""The connection actor: one per client connection, owner of its subscriptions.

Data flow: the WebSocket glue reads frames and tells this actor each text
message; the actor parses it (``transport.protocol``), answers on its own
writer, and forwards joins and leaves to its app's actor. Broadcasts never
pass through here: channel actors write straight to the writer this actor
lent them. When the actor stops, for whatever reason, it leaves every
channel it joined and closes its writer.
"""

from __future__ import annotations

import logging
from typing import Any

from transport import protocol
from transport.errors import ProtocolError
from transport.frames import close_frame

from pykka import ActorDeadError

from .messages import (
    ClientText,
    Connected,
    ConnectionGone,
    Counted,
    Disconnected,
    Join,
    Leave,
    LeaveAll,
    Sent,
    Terminate,
)
from .runtime import GeventActor, tell_if_alive

__all__ = ["ActorSession", "ConnectionActor"]

log = logging.getLogger(__name__)


class ConnectionActor(GeventActor):
    """Speaks the Pusher protocol with one client."""

    def __init__(self, app: Any, writer: Any, app_actor: Any, metrics: Any, socket_id: str | None = None) -> None:
        super().__init__()
        self.app = app
        self.writer = writer
        self.app_actor = app_actor
        self.metrics = metrics
        self.socket_id = socket_id or protocol.new_socket_id()
        self.channels: set[str] = set()
        self.closing = False
        writer.on_sent = self._count_drained
        writer.on_overflow = self._overflow

    # --- lifecycle -----------------------------------------------------------

    def on_start(self) -> None:
        self.metrics.tell(Counted(self.app.id, "opened", 1))
        self.app_actor.tell(Connected(self.socket_id, self.actor_ref))
        self.send(protocol.connection_established_frame(self.socket_id, self.app.activity_timeout))

    def on_stop(self) -> None:
        self._cleanup()

    def on_failure(self, *exc_info: Any) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        if self.channels:
            tell_if_alive(self.app_actor, LeaveAll(tuple(self.channels), self.socket_id))
            self.channels.clear()
        self.writer.close()
        tell_if_alive(self.app_actor, ConnectionGone(self.socket_id))
        tell_if_alive(self.metrics, Counted(self.app.id, "closed", 1))

    # --- messages ------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is ClientText:
            self.metrics.tell(Counted(self.app.id, "received", 1))
            self.metrics.tell(Counted(self.app.id, "received_bytes", len(message.text)))
            try:
                self.handle(protocol.parse_client_message(message.text))
            except ProtocolError as exc:
                self.fail(exc)
        elif kind is Terminate:
            self.close(message.code, message.message)
        elif kind is Disconnected:
            self.actor_ref.stop(block=False)
        else:
            return super().on_receive(message)
        return None

    def handle(self, message: Any) -> None:
        """Act on one parsed client message."""
        kind = type(message)
        if kind is protocol.Ping:
            self.send(protocol.PONG_FRAME)
        elif kind is protocol.Subscribe:
            self.subscribe(message)
        elif kind is protocol.Unsubscribe:
            if message.channel in self.channels:
                self.channels.discard(message.channel)
                self.app_actor.tell(Leave(message.channel, self.socket_id))
        elif kind is protocol.ClientEvent:
            self.fail(ProtocolError(None, "Client events are not supported on this channel"))
        # Pong refreshes activity in the reader; Unknown events are ignored, as Pusher does.

    def subscribe(self, message: protocol.Subscribe) -> None:
        """Validate a subscription and hand it to the app actor."""
        channel = message.channel
        if not channel or len(channel) > self.app.max_channel_name_length:
            raise ProtocolError(None, f"Invalid channel name {channel!r}")
        if channel.startswith(("private-", "presence-")):
            self.send(
                protocol.event_frame(
                    channel,
                    "pusher:subscription_error",
                    {"type": "AuthError", "error": "Private and presence channels need auth", "status": 401},
                )
            )
            return
        self.channels.add(channel)
        self.app_actor.tell(Join(channel, self.socket_id, self.writer, self.actor_ref))

    # --- output --------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Write one frame of our own (not a broadcast) and count it."""
        if self.writer.offer(frame):
            self.metrics.tell(Sent(self.app.id, 1, len(frame)))

    def fail(self, error: ProtocolError) -> None:
        """Report a protocol error to the client; close if it is fatal."""
        if error.fatal and error.code is not None:
            self.close(error.code, error.message)
        else:
            self.send(protocol.error_frame(error.code, error.message))

    def close(self, code: int, message: str) -> None:
        """Send ``pusher:error`` and a close frame with ``code``, then stop."""
        if self.closing:
            return
        self.closing = True
        final = protocol.error_frame(code, message) + close_frame(code, message[:100])
        self.writer.close(final, drop_queued=code == protocol.OVER_CAPACITY)
        self.actor_ref.stop(block=False)

    def _overflow(self) -> None:
        # Runs inside the channel actor that overflowed the buffer: close the
        # writer now (it must take no more frames), stop this actor later.
        self.writer.close(
            protocol.error_frame(protocol.OVER_CAPACITY, "Client is not reading fast enough")
            + close_frame(protocol.OVER_CAPACITY, "over capacity"),
            drop_queued=True,
        )
        self.metrics.tell(Counted(self.app.id, "dropped", 1))
        try:
            self.actor_ref.tell(Terminate(protocol.OVER_CAPACITY, "Client is not reading fast enough"))
        except ActorDeadError:
            log.debug("overflow on a connection that already stopped")

    def _count_drained(self, frames: int, nbytes: int) -> None:
        tell_if_alive(self.metrics, Sent(self.app.id, frames, nbytes))


class ActorSession:
    """The WebSocket glue's handle on a connection actor (see transport.websocket.Session)."""

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def _tell(self, message: Any) -> None:
        try:
            self.ref.tell(message)
        except ActorDeadError:
            log.debug("connection actor already stopped; %r dropped", type(message).__name__)

    def text(self, text: str) -> None:
        self._tell(ClientText(text))

    def closed(self, reason: str) -> None:
        self._tell(Disconnected(reason))

    def terminate(self, code: int, message: str) -> None:
        self._tell(Terminate(code, message))
