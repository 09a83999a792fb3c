"""Messages actors tell each other. Small immutable tuples: they are made per
event (never per subscriber on the broadcast path) and must be cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from transport.auth import PresenceMember
    from transport.presence import Change
    from transport.writer import SocketWriter

    from .refs import ChannelRef, ConnectionRef

__all__ = [
    "TerminateUser",
    "RemoteSync",
    "RemotePublish",
    "RemoteMember",
    "RemoteChanges",
    "RemoteCounts",
    "SubscriptionCount",
    "PublishFrames",
    "NodeGone",
    "LocalMember",
    "MemberDecided",
    "Barrier",
    "Broadcast",
    "ChannelCounts",
    "ChannelDied",
    "ChannelEmpty",
    "ClientText",
    "Connected",
    "ConnectionGone",
    "Disconnected",
    "FanoutDone",
    "FanoutStarted",
    "Flush",
    "Join",
    "JoinRefused",
    "Leave",
    "LeaveAll",
    "LeaveMany",
    "Publish",
    "Received",
    "Relay",
    "Sent",
    "SignedIn",
    "Counted",
    "Timed",
    "Terminate",
]


# --- to the app actor (owner of one app's channel table) ---------------------


class Publish(NamedTuple):
    """Send ``event``/``data`` to ``channels``, skipping ``except_socket_id``."""

    channels: tuple[str, ...]
    event: str
    data: Any
    except_socket_id: str | None
    started: float  # monotonic time of the broadcast call, for the fan-out histogram
    user_id: str | None = None


class PublishFrames(NamedTuple):
    """A publish already encoded at the edge: one finished frame per channel.

    The edge (``Node.broadcast``, the HTTP API) encodes once per channel for
    the whole cluster: the same JSON goes to the bus and, framed, to the
    local channels.
    """

    frames: tuple[tuple[str, bytes], ...]  # (channel, WebSocket frame)
    except_socket_id: str | None
    started: float  # monotonic time of the call on this node (it accepted it), for the fan-out histogram


class RemotePublish(NamedTuple):
    """A publish from another node: (channel, event JSON text) pairs."""

    frames: tuple[tuple[str, str], ...]
    except_socket_id: str | None


class RemoteMember(NamedTuple):
    """A node's presence change off the bus (this node's own too): a user's first socket there
    joined (``ask``: a join to decide in the bus's order), or its last left; ``seq``: the origin's number."""

    node: str
    channel: str
    user_id: str
    user_info: Any
    joined: bool
    ask: bool = False
    seq: int = 0


class RemoteSync(NamedTuple):
    """Another node's whole presence state for this app: {channel: {user_id: user_info}}."""

    node: str
    members: dict[str, dict[str, Any]]


class RemoteCounts(NamedTuple):
    """Another node's own subscriber counts of some channels (``snapshot``: of all its channels)."""

    node: str
    counts: dict[str, int]
    snapshot: bool


class NodeGone(NamedTuple):
    """A node stopped or went silent: forget its members."""

    node: str


class TerminateUser(NamedTuple):
    """Close this node's connections of a signed-in user (asked by another node)."""

    user_id: str


class LocalMember(NamedTuple):
    """To the app actor: a user's first local socket joined a presence channel, or its last left.

    ``ticket`` (a channel of a cluster node): the join waits for the cluster's
    answer, a :class:`MemberDecided` with this ticket (unique in the process).
    """

    channel: str
    user_id: str
    user_info: Any
    joined: bool
    ticket: int = 0


class Join(NamedTuple):
    """A connection asks to subscribe; forwarded to the channel's actor."""

    channel: str
    socket_id: str
    writer: SocketWriter  # owned by the connection; the channel keeps its bound offer
    connection: ConnectionRef
    member: PresenceMember | None = None  # a presence channel's member, else None


class Leave(NamedTuple):
    """A connection leaves one channel."""

    channel: str
    socket_id: str


class LeaveAll(NamedTuple):
    """A connection closed: leave every channel it joined."""

    channels: tuple[str, ...]
    socket_id: str


class LeaveMany(NamedTuple):
    """Several connections leave one channel (disconnects batched by the app actor)."""

    channel: str
    socket_ids: tuple[str, ...]


class ChannelCounts(NamedTuple):
    """A channel's membership changed: what the app actor answers queries from."""

    channel: str
    ref: ChannelRef  # the reporting actor: a report from a retired actor is ignored
    subscriptions: int
    users: int  # presence members (0 for other kinds)


class Barrier(NamedTuple):
    """Answered at once: everything told to the actor before it has been handled."""


class Connected(NamedTuple):
    """A connection actor of this app started."""

    socket_id: str
    connection: ConnectionRef


class ConnectionGone(NamedTuple):
    """A connection actor of this app stopped (``reason``: why it died of a bug, else None)."""

    socket_id: str
    reason: str | None = None
    channels: tuple[str, ...] = ()  # the channels it had joined: left with this one message


class SignedIn(NamedTuple):
    """A connection signed in as ``user_id`` (pusher:signin verified)."""

    user_id: str
    socket_id: str


class ChannelEmpty(NamedTuple):
    """A channel actor lost its last subscriber after ``joins`` joins."""

    channel: str
    joins: int


class ChannelDied(NamedTuple):
    """A channel actor died of a bug; ``socket_ids`` were subscribed (or joining)."""

    channel: str
    ref: ChannelRef  # the dead actor's ref: a fresh actor for the same name must not be dropped
    socket_ids: tuple[str, ...]
    reason: str  # one line: exception, message, file:line


# --- to a channel actor ------------------------------------------------------


class Broadcast(NamedTuple):
    """A finished frame for every subscriber but ``except_socket_id``."""

    frame: bytes
    except_socket_id: str | None
    broadcast_id: int
    started: float


class SubscriptionCount(NamedTuple):
    """Tell the channel's subscribers its cluster-wide subscription count."""

    total: int


class RemoteChanges(NamedTuple):
    """To a presence channel: users now present (or gone) on other nodes."""

    changes: tuple[Change, ...]


class MemberDecided(NamedTuple):
    """To a presence channel: the cluster admitted (or refused, the member limit) the join ``ticket``."""

    user_id: str
    ticket: int
    admitted: bool


class Relay(NamedTuple):
    """A client event's finished frame, from subscriber ``socket_id`` to the others."""

    channel: str
    frame: bytes
    socket_id: str


# --- to a connection actor ---------------------------------------------------


class ClientText(NamedTuple):
    """A text message the client sent (``nbytes``: its size on the wire)."""

    text: str
    nbytes: int = 0


class JoinRefused(NamedTuple):
    """The channel refused a join (e.g. presence member limit); forget it."""

    channel: str


class Disconnected(NamedTuple):
    """The socket closed (client left, error or shutdown)."""

    reason: str


class Terminate(NamedTuple):
    """Close the connection with a Pusher ``code`` (e.g. 4009, 4100, 4200)."""

    code: int
    message: str


# --- to the metrics actor ----------------------------------------------------


class Counted(NamedTuple):
    """Add ``value`` to counter ``name`` for ``app_id``."""

    app_id: str
    name: str
    value: int


class Timed(NamedTuple):
    """Observe ``seconds`` in histogram ``name`` for ``app_id`` (e.g. a webhook's send time)."""

    app_id: str
    name: str
    seconds: float


class FanoutStarted(NamedTuple):
    """A broadcast went to ``channels`` channel actors (maybe none).

    ``accepted``: this node accepted the publish (``started`` is the call's
    time); otherwise it came from another node (``started`` is its arrival).
    """

    app_id: str
    broadcast_id: int
    channels: int
    started: float
    accepted: bool = True


class FanoutDone(NamedTuple):
    """One channel actor finished its part of a broadcast."""

    app_id: str
    broadcast_id: int
    sent: int
    nbytes: int
    finished: float


class Sent(NamedTuple):
    """Frames written outside a broadcast (protocol replies, drained queues)."""

    app_id: str
    frames: int
    nbytes: int


class Received(NamedTuple):
    """One message of ``nbytes`` came in from a client."""

    app_id: str
    nbytes: int


class Flush(NamedTuple):
    """Push accumulated counts to prometheus-client now."""
