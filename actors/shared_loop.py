"""Actors without a greenlet of their own: one loop per hub runs them in turn.

A :class:`~actors.runtime.GeventActor` parks a greenlet on its inbox for its
whole life. For the one actor per client connection that costs ~11 KiB of
saved stack each and a greenlet spawn and teardown per connect and
disconnect. A :class:`SharedLoopActor` keeps the same Pykka model (``tell``,
``ask``, ``stop``, ``on_start``/``on_stop``/``on_failure``, proxies) but its
inbox, when a message arrives while it is idle, puts the actor on the hub's
ready queue; one shared greenlet takes actors off that queue and runs a few
of their messages each. An idle actor holds no greenlet and no queue.

The shared loop yields to the hub every :data:`SLICE_MESSAGES` messages or
:data:`SLICE_SECONDS`, so a burst (15,000 clients disconnecting at once) is
worked off in slices while new connections, API calls and broadcasts get
their turns in between.

The rule that comes with it: a handler of a SharedLoopActor must not block
(no ``ask(...).get()`` on another SharedLoopActor, no sleeping): it would
hold up every other actor on the loop. Connection actors only ever ``tell``.

These actors are not registered in Pykka's ``ActorRegistry``: it is a list,
so registering one actor per connection makes every unregister an O(N)
scan. Their owner (the app actor) holds their refs.
"""

from __future__ import annotations

import logging
import sys
import time
import weakref
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import gevent
from pykka import ActorDeadError, ActorRef
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

from .runtime import GeventActor, yield_to_io

if TYPE_CHECKING:
    from gevent.hub import Hub

__all__ = ["SLICE_MESSAGES", "SLICE_SECONDS", "SharedLoopActor"]

log = logging.getLogger(__name__)

SLICE_MESSAGES = 256  # messages the shared loop runs before it yields to the hub
SLICE_SECONDS = 0.005  # ... or this much time, whichever comes first
_PER_TURN = 16  # messages of one actor before the next ready actor gets its turn
BACKGROUND_EVERY = 8  # one turn in this many goes to cleanup even while others wait

_START = object()  # the first envelope of every actor: run on_start on the loop
_IDLE, _BACKGROUND, _READY = 0, 1, 2  # where an actor waits on the shared loop


class _SharedLoop:
    """The ready actors of one hub and the greenlet that runs them."""

    __slots__ = ("background", "parked", "ready", "runner", "yield_now", "__weakref__")

    def __init__(self) -> None:
        self.ready: deque[SharedLoopActor] = deque()
        # Actors woken only by cleanup (a socket gone, a channel leave, a
        # stop): served when nothing else waits, and every BACKGROUND_EVERY
        # turns anyway, so 15,000 goodbyes never stand between a new
        # client and its connection_established.
        self.background: deque[SharedLoopActor] = deque()
        # One long-lived greenlet: parked on the hub while nothing is ready,
        # switched back to by wake(). Spawning a fresh one at every wake from
        # idle (a publish every few ms) cost ~7% of a busy hub.
        self.runner: gevent.Greenlet | None = None
        self.parked = False
        self.yield_now = False  # set by an actor that split its work (run_next): let the hub in first

    def wake(self, actor: SharedLoopActor, background: bool = False) -> None:
        (self.background if background else self.ready).append(actor)
        if self.parked:
            self.parked = False
            self.runner.parent.loop.run_callback(self.runner.switch)  # type: ignore[union-attr]  # parked: it exists
        elif self.runner is None:
            self.runner = gevent.spawn(self._serve)

    def _serve(self) -> None:
        hub = gevent.get_hub()
        try:
            while True:
                self._run()
                self.parked = True
                hub.switch()  # until wake() switches back (nothing else knows this greenlet)
        finally:
            self.runner, self.parked = None, False
            if self.ready or self.background:  # left by an exception that ended this greenlet: keep the others going
                self.runner = gevent.spawn(self._serve)

    def _run(self) -> None:
        ready, background = self.ready, self.background
        handled = 0
        turns = 0
        slice_start = time.perf_counter()
        while ready or background:
            turns += 1
            if background and (not ready or turns % BACKGROUND_EVERY == 0):
                handled += background.popleft()._run_turn(background)
            else:
                handled += ready.popleft()._run_turn(ready)
            if self.yield_now or handled >= SLICE_MESSAGES or time.perf_counter() - slice_start >= SLICE_SECONDS:
                self.yield_now = False
                yield_to_io()  # let sockets, timers and other greenlets in
                handled, slice_start = 0, time.perf_counter()


_loops: weakref.WeakKeyDictionary[Hub, _SharedLoop] = weakref.WeakKeyDictionary()


def _loop_of_current_hub() -> _SharedLoop:
    hub = gevent.get_hub()
    loop = _loops.get(hub)
    if loop is None:
        loop = _loops[hub] = _SharedLoop()
    return loop


class _Inbox:
    """A SharedLoopActor's inbox: a queue that exists only while messages wait."""

    __slots__ = ("actor", "queue", "scheduled")

    def __init__(self) -> None:
        self.actor: SharedLoopActor = cast("SharedLoopActor", None)  # set by the actor right after creation
        self.queue: deque[Envelope[Any]] | None = None
        self.scheduled = _IDLE

    def put(self, envelope: Envelope[Any], /) -> None:
        if self.queue is None:
            self.queue = deque()
        self.queue.append(envelope)
        actor = self.actor
        if type(envelope.message) in actor.background_messages:
            if self.scheduled == _IDLE:
                self.scheduled = _BACKGROUND
                actor._loop.wake(actor, True)  # noqa: SLF001 - the inbox and its actor are one unit
        elif self.scheduled != _READY:
            # Also when waiting in the background lane: its queue is one, so
            # this turn runs the cleanup ahead of it too, in order.
            self.scheduled = _READY
            actor._loop.wake(actor)  # noqa: SLF001

    def get(self) -> Envelope[Any]:
        if not self.queue:
            raise IndexError("empty inbox")
        return self.queue.popleft()

    def empty(self) -> bool:
        return not self.queue

    def qsize(self) -> int:
        return len(self.queue) if self.queue else 0

    def pending(self) -> list[Envelope[Any]]:
        """The envelopes still queued, oldest first (left in place)."""
        return [envelope for envelope in self.queue or () if envelope.message is not _START]


_A = TypeVar("_A", bound="SharedLoopActor")


class SharedLoopActor(GeventActor):
    """A Pykka actor whose messages run on its hub's shared loop (see the module doc)."""

    #: Message types that only clean up; they wait in the loop's background lane.
    background_messages: frozenset[type] = frozenset({_ActorStop})
    actor_inbox: _Inbox  # type: ignore[assignment]  # our inbox, not Pykka's queue type

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actor_inbox.actor = self  # a strong ref: the actor lives as long as its ref does
        self._loop = _loop_of_current_hub()
        self._turn_ends = False

    @staticmethod
    def _create_actor_inbox() -> _Inbox:  # type: ignore[override]
        return _Inbox()

    @classmethod
    def start(cls: type[_A], *args: Any, **kwargs: Any) -> ActorRef[_A]:
        """Create the actor and queue its ``on_start``; returns its ref (not registered)."""
        actor = cls(*args, **kwargs)
        actor._start_actor_loop()
        return actor.actor_ref

    def _start_actor_loop(self) -> None:
        self.actor_inbox.put(Envelope(_START))

    def run_next(self, message: object) -> None:
        """Handle ``message`` before anything else queued, once the hub had a turn.

        For a handler that splits a long job (a fan-out to 19,000 sockets):
        it does a slice, then ``run_next(the_rest)`` and returns, instead of
        blocking the shared loop. Call it only from this actor's own handlers.
        """
        inbox = self.actor_inbox
        if inbox.queue is None:
            inbox.queue = deque()
        inbox.queue.appendleft(Envelope(message))
        self._turn_ends = True

    # --- the loop's side ---------------------------------------------------------------

    def _run_turn(self, lane: deque[SharedLoopActor]) -> int:
        """Run up to a turn's worth of messages; requeue in ``lane`` if more wait. Returns how many ran."""
        inbox = self.actor_inbox
        queue = inbox.queue
        if not queue:
            return 0  # an entry left in the other lane after a turn in this one already ran it all
        ran = 0
        stopped = self.actor_stopped
        self._turn_ends = False
        while queue and ran < _PER_TURN and not stopped.is_set():
            envelope = queue.popleft()
            ran += 1
            if envelope.message is _START:
                self._actor_loop_setup()
            else:
                self._handle_envelope(envelope)
                if self._turn_ends:  # run_next: the rest waits until the hub had a turn
                    self._loop.yield_now = True
                    queue = inbox.queue
                    break
        if stopped.is_set():
            self._refuse_pending()
        elif queue:
            lane.append(self)  # more waiting: back of the line, others go first
            return ran
        inbox.queue = None  # idle: hold no queue
        inbox.scheduled = _IDLE
        return ran

    def _handle_envelope(self, envelope: Envelope[Any]) -> None:
        # Pykka's loop body (pykka._actor.Actor._actor_loop_running), for one envelope.
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception as error:  # handed on, as Pykka does: to the asker, or to supervision
            exc_info = (type(error), error, error.__traceback__)
            if envelope.reply_to is not None:
                log.debug("exception returned from %s to its caller", self, exc_info=exc_info)
                envelope.reply_to.set_exception(exc_info)
            else:
                self._handle_failure(*exc_info)
                self.on_failure(*exc_info)

    def _refuse_pending(self) -> None:
        # Pykka's teardown: asks still queued learn the actor is gone.
        queue = self.actor_inbox.queue
        while queue:
            envelope = queue.popleft()
            if envelope.reply_to is not None:
                if type(envelope.message).__name__ == "_ActorStop":
                    envelope.reply_to.set(None)
                else:
                    error = ActorDeadError(f"{self.actor_ref} stopped before handling the message")
                    envelope.reply_to.set_exception(exc_info=(ActorDeadError, error, None))

    # --- no registry -------------------------------------------------------------------

    def _handle_failure(
        self, exc_type: type[BaseException] | None, exc_value: BaseException | None, tb: TracebackType | None
    ) -> None:
        log.debug("%s raised", self, exc_info=(exc_type, exc_value, tb))  # type: ignore[arg-type]  # as Pykka's
        self.actor_stopped.set()

    def _stop(self) -> None:
        self.actor_stopped.set()
        try:
            self.on_stop()
        except Exception:  # a cleanup that raises is a death too
            self._handle_failure(*sys.exc_info())
            self.on_failure(*sys.exc_info())
