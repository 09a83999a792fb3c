"""The connection actor: one per client connection, owner of its subscriptions.

Data flow: the WebSocket glue reads frames and tells this actor each text
message; the actor parses it (``transport.protocol``), checks names and
signatures (``transport.names``, ``transport.auth``), answers on its own
writer, and forwards joins, leaves and client events to its app's actor.
Broadcasts never pass through here: channel actors write straight to the
writer this actor lent them. When the actor stops, for whatever reason, it
leaves every channel it joined and closes its writer. Should it die of a bug,
the client hears ``pusher:error`` and close code 1011 (internal error; the
client reconnects) and the app actor logs the death on one line.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pykka import ActorDeadError

from transport import auth, names, protocol
from transport.config import App
from transport.errors import AuthError, ProtocolError
from transport.frames import close_frame
from transport.ops_log import OpsLog
from transport.writer import SocketWriter

from .messages import (
    ClientText,
    Connected,
    ConnectionGone,
    Counted,
    Disconnected,
    Join,
    JoinRefused,
    Leave,
    Received,
    Relay,
    Sent,
    SignedIn,
    Terminate,
)
from .refs import AppRef, ConnectionRef, MetricsRef
from .runtime import tell_if_alive
from .shared_loop import SharedLoopActor

__all__ = ["ActorSession", "ConnectionActor"]

log = logging.getLogger(__name__)

Kind = names.ChannelKind

INTERNAL_ERROR = 1011  # RFC 6455: the server hit an unexpected condition


class ConnectionActor(SharedLoopActor):
    """Speaks the Pusher protocol with one client.

    A :class:`~actors.shared_loop.SharedLoopActor`: an idle connection holds no
    greenlet, and its handlers never block (they only ``tell``).
    """

    # A dropped socket's goodbye waits behind live clients' work (shared_loop).
    background_messages = SharedLoopActor.background_messages | {Disconnected}

    def __init__(
        self,
        app: App,
        writer: SocketWriter,
        app_actor: AppRef,
        metrics: MetricsRef,
        socket_id: str | None = None,
        ops: OpsLog | None = None,
    ) -> None:
        super().__init__()
        self.app = app
        self.writer = writer
        self.app_actor = app_actor
        self.metrics = metrics
        self.socket_id = socket_id or protocol.new_socket_id()
        self.ops = ops  # the node's (on its hub, as this actor): refusal lines
        self.channels: dict[str, str | None] = {}  # joined channel -> presence user_id (or None)
        self.user: auth.SignedInUser | None = None
        self.closing = False
        self._window_start = 0.0  # client-event rate limit: a fixed one-second window
        self._window_events = 0
        writer.on_sent = self._count_drained
        writer.on_overflow = self._overflow

    # --- lifecycle -----------------------------------------------------------

    def on_start(self) -> None:
        tell_if_alive(self.metrics, Counted(self.app.id, "opened", 1))
        self._tell_app(Connected(self.socket_id, self.actor_ref))
        self.send(protocol.connection_established_frame(self.socket_id, self.app.activity_timeout))

    def on_stop(self) -> None:
        self._cleanup()

    def on_died(self, reason: str) -> None:
        """Died of a bug (in on_start too): say so to the client (1011), clean up as on stop."""
        message = "Internal server error; please reconnect"
        self._cleanup(protocol.error_frame(INTERNAL_ERROR, message) + close_frame(INTERNAL_ERROR, message), reason)

    def _cleanup(self, final: bytes = b"", reason: str | None = None) -> None:
        # One message for the whole goodbye (its leaves included): when
        # 15,000 clients drop at once, the app actor's inbox is the queue.
        joined, self.channels = tuple(self.channels), {}
        self.writer.close(final)
        if not tell_if_alive(self.app_actor, ConnectionGone(self.socket_id, reason, joined)) and reason is not None:
            log.error("connection actor %s of app %s died: %s; closed with 1011", self.socket_id, self.app.id, reason)
        tell_if_alive(self.metrics, Counted(self.app.id, "closed", 1))

    def _tell_app(self, message: object) -> None:
        if not tell_if_alive(self.app_actor, message):
            # The app actor died of a bug and its supervisor started a fresh
            # one: reconnecting is how this client gets to it.
            self.close(protocol.RECONNECT, "Server restarting this app after an internal error")

    # --- messages ------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is ClientText:
            tell_if_alive(self.metrics, Received(self.app.id, message.nbytes))
            try:
                self.handle(protocol.parse_client_message(message.text))
            except ProtocolError as exc:
                self.fail(exc)
        elif kind is Terminate:
            self.close(message.code, message.message)
        elif kind is JoinRefused:
            self.channels.pop(message.channel, None)
        elif kind is Disconnected:
            self.actor_ref.stop(block=False)
        else:
            return super().on_receive(message)
        return None

    def handle(self, message: Any) -> None:  # a protocol.ClientMessage; mypy narrows no ``kind = type(...)``
        """Act on one parsed client message."""
        kind = type(message)
        if kind is protocol.Ping:
            self.send(protocol.PONG_FRAME)
        elif kind is protocol.Subscribe:
            self.subscribe(message)
        elif kind is protocol.Unsubscribe:
            if message.channel in self.channels:
                del self.channels[message.channel]
                self._tell_app(Leave(message.channel, self.socket_id))
        elif kind is protocol.ClientEvent:
            self.client_event(message)
        elif kind is protocol.Signin:
            self.signin(message)
        # Pong refreshes activity in the reader; Unknown events are ignored, as Pusher does.

    def subscribe(self, message: protocol.Subscribe) -> None:
        """Validate a subscription (name, signature) and hand it to the app actor."""
        channel = message.channel
        own_user_channel = self.may_join_user_channel(channel)
        try:
            names.validate_channel_name(channel, self.app.max_channel_name_length, allow_server_to_user=own_user_channel)
        except ProtocolError as exc:
            if isinstance(channel, str) and channel.startswith(names.SERVER_TO_USER_PREFIX):
                # Another user's channel (or no sign-in): an auth failure, not a typo.
                self._refused("subscription", "subscription to a #server-to-user- channel", exc.message, True,
                              channel=channel, code=exc.code)
            raise
        member = None
        try:
            kind = names.channel_kind(channel)
            if kind is Kind.PRESENCE:
                auth.verify_channel_auth(
                    self.app.key, self.app.secret, self.socket_id, channel, message.auth, message.channel_data
                )
                member = auth.parse_presence_channel_data(message.channel_data, self.app.max_user_info_bytes)
            elif kind is not Kind.PUBLIC:
                auth.verify_channel_auth(self.app.key, self.app.secret, self.socket_id, channel, message.auth)
        except ProtocolError as exc:
            # pusher-js hands this object to the app's subscription_error handler.
            if isinstance(exc, AuthError):
                error = {"type": "AuthError", "error": exc.message, "status": exc.status}
            elif exc.code == auth.USER_INFO_TOO_LARGE_CODE:
                error = {"type": "LimitReached", "error": exc.message, "status": 413}
            else:
                error = {"type": "InvalidChannelData", "error": exc.message, "status": 400}
            self._refused("subscription", f"subscription to {channel}", exc.message, isinstance(exc, AuthError),
                          channel=channel, status=error["status"], error_type=error["type"])
            self.send(protocol.event_frame(channel, "pusher:subscription_error", error))
            return
        self.channels[channel] = member.user_id if member is not None else None
        self._tell_app(Join(channel, self.socket_id, self.writer, self.actor_ref, member))

    def client_event(self, message: protocol.ClientEvent) -> None:
        """Relay a ``client-*`` event to the channel's other subscribers."""
        channel, event = message.channel, message.event
        names.validate_event_name(event, self.app.max_event_name_length)
        if not self.app.enable_client_messages:
            raise ProtocolError(None, "Client events are disabled for this app: enable_client_messages")
        kind = names.channel_kind(channel)
        if kind is Kind.PUBLIC or kind is Kind.PRIVATE_ENCRYPTED:
            raise ProtocolError(None, f"Client events are only allowed on private and presence channels, not {channel}")
        if channel not in self.channels:
            raise ProtocolError(None, f"Subscribe to {channel} before sending client events on it")
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_events = now, 0
        self._window_events += 1
        if self._window_events > self.app.client_events_per_second:
            raise ProtocolError(
                protocol.CLIENT_EVENT_REJECTED,
                f"Client event rejected: more than {self.app.client_events_per_second} per second",
            )
        # The parser already refused data JSON cannot carry (NaN, lone surrogates).
        frame = protocol.event_frame(channel, event, message.data, self.channels[channel])
        if len(frame) > self.app.max_event_bytes + 512:  # 512: room for the envelope around data
            raise ProtocolError(None, f"Client event is over the {self.app.max_event_bytes} byte limit")
        self._tell_app(Relay(channel, frame, self.socket_id))

    def signin(self, message: protocol.Signin) -> None:
        """User authentication: verify, answer ``pusher:signin_success``, tell the app actor."""
        try:
            auth.verify_user_auth(self.app.key, self.app.secret, self.socket_id, message.user_data, message.auth)
            user = auth.parse_user_data(message.user_data)
        except ProtocolError as exc:
            # Pusher closes a connection whose sign-in fails (4009: unauthorized).
            self._refused("signin", "user sign-in", exc.message, isinstance(exc, AuthError), code=protocol.UNAUTHORIZED)
            self.close(protocol.UNAUTHORIZED, exc.message)
            return
        self.user = user
        self.send(protocol.event_frame(None, "pusher:signin_success", {"user_data": user.raw}))
        self._tell_app(SignedIn(user.id, self.socket_id))

    def _refused(self, kind: str, what: str, reason: str, auth_failed: bool, **fields: object) -> None:
        """The one line a refused subscription or sign-in gets (a bad signature: WARNING)."""
        if self.ops is None:
            return
        remote = self.writer.peer()
        self.ops.note(log, logging.WARNING if auth_failed else logging.INFO, remote,
                      f"{what} refused for {remote} (socket {self.socket_id}, app {self.app.id}): {reason}",
                      kind=f"{kind}_refused", app_id=self.app.id, socket_id=self.socket_id, reason=reason, **fields)

    def may_join_user_channel(self, channel: str) -> bool:
        """``#server-to-user-{id}`` is open only to that signed-in user."""
        return (
            self.user is not None
            and isinstance(channel, str)
            and names.user_id_from_server_to_user(channel) == self.user.id
        )

    # --- output --------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Write one frame of our own (not a broadcast) and count it."""
        if self.writer.offer(frame):
            tell_if_alive(self.metrics, Sent(self.app.id, 1, len(frame)))

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
        tell_if_alive(self.metrics, Counted(self.app.id, "dropped", 1))
        tell_if_alive(self.actor_ref, Terminate(protocol.OVER_CAPACITY, "Client is not reading fast enough"))

    def _count_drained(self, frames: int, nbytes: int) -> None:
        tell_if_alive(self.metrics, Sent(self.app.id, frames, nbytes))


class ActorSession:
    """The WebSocket glue's handle on a connection actor (see transport.websocket.Session)."""

    __slots__ = ("ref",)

    def __init__(self, ref: ConnectionRef) -> None:
        self.ref = ref

    def _tell(self, message: object) -> None:
        try:
            self.ref.tell(message)
        except ActorDeadError:
            log.debug("connection actor already stopped; %r dropped", type(message).__name__)

    def text(self, text: str, nbytes: int = 0) -> None:
        self._tell(ClientText(text, nbytes or len(text)))

    def closed(self, reason: str) -> None:
        self._tell(Disconnected(reason))

    def terminate(self, code: int, message: str) -> None:
        self._tell(Terminate(code, message))
