"""A Pykka runtime on gevent: the actor's loop is a greenlet.

Pykka 4 keeps the actor model (``Actor``, ``ActorRef``, ``Future``) and lets a
runtime supply three hooks: the inbox, the future and the loop. This module
supplies them on gevent:

* inbox  -- a ``gevent.queue.SimpleQueue`` (unbounded, FIFO);
* future -- :class:`GeventFuture`, a ``gevent.event.AsyncResult``;
* loop   -- a greenlet spawned on the current hub.

Everything actorcast runs is a :class:`GeventActor`; no other module knows it
is gevent underneath. All actors of one node live on one hub (one OS thread),
so a ``tell`` is a queue append and a context switch, never a lock.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

import gevent
import gevent.event
import gevent.queue
import pykka
from pykka._envelope import Envelope

if TYPE_CHECKING:
    from pykka._types import OptExcInfo
    from typing_extensions import TypeVarTuple, Unpack

    _Args = TypeVarTuple("_Args")

log = logging.getLogger(__name__)

#: How long a GeventActor works off its backlog before it lets the hub in.
INBOX_SLICE_SECONDS = 0.002

_PID = os.getpid()
_actor_numbers = itertools.count(1)


def _after_fork_in_child() -> None:
    global _PID  # URNs stay unique across worker processes
    _PID = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = [
    "GeventActor",
    "GeventFuture",
    "PriorityInbox",
    "Timer",
    "call_later",
    "describe_failure",
    "proxy_of",
    "sleep",
    "spawn",
    "tell_if_alive",
    "yield_to_io",
]


_T = TypeVar("_T")
_A = TypeVar("_A", bound=pykka.Actor)
_P = ParamSpec("_P")


class GeventFuture(pykka.Future[_T]):
    """A Pykka future backed by a gevent ``AsyncResult``.

    ``get(timeout=...)`` blocks the calling greenlet only, and raises
    ``pykka.Timeout`` when the timeout passes, as Pykka documents.
    """

    def __init__(self, async_result: gevent.event.AsyncResult | None = None) -> None:
        super().__init__()
        self.async_result = async_result or gevent.event.AsyncResult()

    def get(self, *, timeout: float | None = None) -> _T:
        try:
            return super().get(timeout=timeout)
        except NotImplementedError:
            pass
        try:
            return self.async_result.get(timeout=timeout)
        except gevent.Timeout as exc:
            raise pykka.Timeout(f"{timeout} seconds") from exc

    def set(self, value: _T | None = None) -> None:
        # Pykka's contract: a future is set once; a second set is a bug.
        if self.async_result.ready() or self._get_hook is not None:
            raise gevent.queue.Full
        self.async_result.set(value)

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        if self.async_result.ready() or self._get_hook is not None:
            raise gevent.queue.Full
        if exc_info is None:
            exc_info = sys.exc_info()
        exc_type, exc_value, exc_tb = exc_info
        if exc_value is None:
            assert exc_type is not None  # a triple without a value still names the type
            exc_value = exc_type()
        self.async_result.set_exception(exc_value, exc_info=(exc_type, exc_value, exc_tb))


class _Inbox(gevent.queue.SimpleQueue):
    """A gevent queue that lets the hub run while an actor works off a backlog.

    ``get`` on a non-empty gevent queue returns without switching, so an actor
    with a backlog (an app actor hit by 15,000 disconnects) would keep the hub
    to itself. It yields once it has worked :data:`INBOX_SLICE_SECONDS`
    without a pause, through the loop (``yield_to_io``) so sockets and timers
    get their turn too. Not once per message: with other busy greenlets, one
    message per round would let a backlog of cleanup hold up a new client's
    join for a second.
    """

    _slice_start = 0.0

    def get(self, *args: Any, **kwargs: Any) -> Envelope[Any]:
        if self.qsize():
            now = time.perf_counter()
            if now - self._slice_start >= INBOX_SLICE_SECONDS:
                yield_to_io()
                self._slice_start = time.perf_counter()
        else:
            item = super().get(*args, **kwargs)  # waits: the next slice starts when a message wakes it
            self._slice_start = time.perf_counter()
            return item
        return super().get(*args, **kwargs)

    def pending(self) -> list[Envelope[Any]]:
        """The envelopes still queued, oldest first (left in place)."""
        return list(self.queue)

    def take_all(self) -> list[Envelope[Any]]:
        """Remove and return the envelopes still queued, oldest first, without yielding."""
        taken = self.pending()
        self.queue.clear()
        return taken


class PriorityInbox(_Inbox):
    """An inbox whose cleanup messages wait while anything else is queued.

    Messages whose type is in ``low`` (say, "a connection is gone") go to a
    second lane that is served only when the first is empty. Each lane keeps
    its order; a first-lane message may overtake queued cleanup, so use it
    only for messages whose handling does not depend on that cleanup. The
    gevent queue underneath holds one token per message, for the waiting.
    """

    def __init__(self, low: tuple[type, ...]) -> None:
        super().__init__()
        self.low_types = frozenset(low)
        self.first: collections.deque[Envelope[Any]] = collections.deque()
        self.second: collections.deque[Envelope[Any]] = collections.deque()

    def put(self, envelope: Envelope[Any], *args: Any, **kwargs: Any) -> None:
        (self.second if type(envelope.message) in self.low_types else self.first).append(envelope)
        super().put(None, *args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Envelope[Any]:
        super().get(*args, **kwargs)
        return self.first.popleft() if self.first else self.second.popleft()

    def pending(self) -> list[Envelope[Any]]:
        return [*self.first, *self.second]

    def take_all(self) -> list[Envelope[Any]]:
        taken = self.pending()
        self.first.clear()
        self.second.clear()
        self.queue.clear()  # their tokens
        return taken


class _StoppedFlag:
    """What Pykka needs of ``actor_stopped``: ``set`` and ``is_set``.

    Pykka makes it a ``threading.Event`` (a lock and a condition, ~1 KiB);
    all of a node's actors live on one hub thread, and there is one actor per
    connection, so a plain flag is enough and much smaller.
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class GeventActor(pykka.Actor):
    """A Pykka actor whose loop runs in a greenlet on the current gevent hub.

    Start it from code running on the hub that should own it (the node's hub);
    use ``ref.tell`` to fan out and ``ref.ask(..., timeout=...)`` only at edges.
    """

    actor_inbox: _Inbox  # a gevent queue (Pykka leaves the type open)

    if TYPE_CHECKING:  # Pykka's start() returns ActorRef[typing.Self]: Any to mypy on Python 3.10

        @classmethod
        def start(cls: type[_A], *args: Any, **kwargs: Any) -> pykka.ActorRef[_A]: ...

        @property
        def actor_ref(self: _A) -> pykka.ActorRef[_A]: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # What pykka.Actor.__init__ sets up, made cheap enough for one actor
        # per connection: Pykka builds a threading.Event (a lock and a
        # condition, ~20 us and ~1 KiB) and a uuid4 URN (~10 us); all of a
        # node's actors live on one hub thread, so a plain flag does, and a
        # process-wide counter gives a URN as unique.
        self.actor_urn = f"urn:actorcast:{_PID}:{next(_actor_numbers)}"
        self.actor_inbox = self._create_actor_inbox()
        self.actor_stopped = _StoppedFlag()  # type: ignore[assignment]
        self._actor_ref = pykka.ActorRef(self)

    @staticmethod
    def _create_actor_inbox() -> _Inbox:
        return _Inbox()

    @staticmethod
    def _create_future() -> GeventFuture[Any]:
        return GeventFuture()

    def _start_actor_loop(self) -> None:
        gevent.spawn(self._actor_loop)

    # --- supervision -------------------------------------------------------------
    #
    # Pykka logs every unhandled exception with a full traceback at ERROR and
    # calls ``on_failure`` only for a failed ``tell``. Here an actor's death
    # is reported once, on one line, by its supervisor: every way of dying (a
    # told message, ``on_start``, ``on_stop``) ends in ``on_failure``, which
    # hands a one-line reason to ``on_died``; the traceback goes to DEBUG.

    def _handle_failure(
        self, exc_type: type[BaseException] | None, exc_value: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Pykka's semantics (unregister, stop the loop) without its ERROR traceback.
        log.debug("%s raised", self, exc_info=(exc_type, exc_value, tb))  # type: ignore[arg-type]  # as Pykka's
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()

    def _actor_loop_setup(self) -> None:
        try:
            self.on_start()
        except Exception:  # the actor dies; on_failure tells its supervisor
            self._handle_failure(*sys.exc_info())
            self.on_failure(*sys.exc_info())

    def _stop(self) -> None:
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        log.debug("Stopped %s", self)
        try:
            self.on_stop()
        except Exception:  # a cleanup that raises is a death too
            self._handle_failure(*sys.exc_info())
            self.on_failure(*sys.exc_info())

    def on_failure(
        self, exc_type: type[BaseException] | None, exc_value: BaseException | None, tb: TracebackType | None
    ) -> None:
        """The actor died of ``exc_value``: hand a one-line reason to :meth:`on_died`."""
        reason = describe_failure(exc_type, exc_value, tb)
        try:
            self.on_died(reason)
        except Exception:  # the supervisor may not have heard of the death: say it here
            log.debug("%s: on_died raised", self, exc_info=True)
            log.error("%s died (%s); telling its supervisor failed: %s", self, reason, describe_failure(*sys.exc_info()))

    def on_died(self, reason: str) -> None:
        """Clean up after a death and tell the supervisor, who logs ``reason`` on one line.

        Runs in the dead actor's greenlet, after it stopped taking messages.
        Actors with a supervisor override this; without one (the default)
        the actor logs the line itself.
        """
        log.error("%s died: %s", self, reason)

    def pending_messages(self) -> list[object]:
        """Messages still in the inbox (for a dead actor: what it will never handle)."""
        return [envelope.message for envelope in self.actor_inbox.pending()]


_REASON_CHARS = 300


def describe_failure(
    exc_type: type[BaseException] | None, exc_value: BaseException | None, tb: TracebackType | None
) -> str:
    """``"KeyError: 'x' at actors/app.py:120"``: the exception and its innermost frame.

    Always one printable line: the message may hold client text (newlines,
    lone surrogates a log file cannot encode), so it is escaped and cut short.
    """
    message = str(exc_value).encode("utf-8", "backslashreplace").decode("utf-8")
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    if len(message) > _REASON_CHARS:
        message = message[:_REASON_CHARS] + "..."
    text = f"{getattr(exc_type, '__name__', exc_type)}: {message}"
    frames = traceback.extract_tb(tb) if tb is not None else []
    if frames:
        where = frames[-1]
        path = os.path.join(*os.path.normpath(where.filename).split(os.sep)[-2:])
        text += f" at {path}:{where.lineno}"
    return text


def proxy_of(ref: pykka.ActorRef[_A]) -> pykka.ActorProxy[_A]:
    """``ref.proxy()``, built once per actor and kept on its ref.

    Pykka builds a proxy by introspecting every attribute of the actor
    (about 1 ms for an app actor); the edges that ask an actor again and
    again (the HTTP API, the node's queries) reuse one. (Pykka types a
    proxy's attributes as ``Any``; ``actors.refs`` has typed ones.)
    """
    cached = ref.__dict__.get("_actorcast_proxy")
    if cached is None:
        cached = ref.__dict__["_actorcast_proxy"] = ref.proxy()
    return cached


def tell_if_alive(ref: pykka.ActorRef[_A], message: object) -> bool:
    """``ref.tell(message)``, or False when the actor already stopped.

    For messages that only matter while the receiver lives (a count, a
    "channel is empty"), sent during shutdown when owners stop first.
    """
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


class Timer(Protocol):
    """What :func:`call_later` returns (a greenlet): ``kill(block=False)`` cancels it."""

    def kill(self, *, block: bool = True) -> None: ...


def spawn(func: Callable[_P, object], *args: _P.args, **kwargs: _P.kwargs) -> gevent.Greenlet:
    """Run ``func`` concurrently on the current hub (a greenlet)."""
    return gevent.spawn(func, *args, **kwargs)


def call_later(seconds: float, func: Callable[[Unpack[_Args]], object], *args: Unpack[_Args]) -> gevent.Greenlet:
    """Run ``func(*args)`` after ``seconds``; ``.kill()`` the result (a :class:`Timer`) to cancel."""
    return gevent.spawn_later(seconds, func, *args)


def sleep(seconds: float = 0) -> None:
    """Yield to other greenlets for ``seconds`` (0: just yield)."""
    gevent.sleep(seconds)


#: A sleep this short still goes through a timer, so the loop polls first.
_POLL_FIRST_SECONDS = 1e-6


def yield_to_io() -> None:
    """Let the event loop poll sockets and run timers, then carry on.

    ``sleep(0)`` only lets other ready greenlets run: gevent looks at the
    clock every 50 callbacks, so a few greenlets that each work a 5 ms slice
    and ``sleep(0)`` can keep accepts, reads and timers waiting for 100 ms
    and more. Work done in slices (the shared actor loop, closing sockets
    after a mass disconnect) yields with this instead.
    """
    gevent.sleep(_POLL_FIRST_SECONDS)
