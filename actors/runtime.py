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

import logging
from typing import Any

import gevent
import gevent.event
import gevent.queue
import pykka
from gevent import monkey

log = logging.getLogger(__name__)

__all__ = ["GeventActor", "GeventFuture", "HubThread", "call_later", "sleep", "spawn", "tell_if_alive"]


class GeventFuture(pykka.Future):
    """A Pykka future backed by a gevent ``AsyncResult``.

    ``get(timeout=...)`` blocks the calling greenlet only, and raises
    ``pykka.Timeout`` when the timeout passes, as Pykka documents.
    """

    def __init__(self, async_result: gevent.event.AsyncResult | None = None) -> None:
        super().__init__()
        self.async_result = async_result or gevent.event.AsyncResult()

    def get(self, *, timeout: float | None = None) -> Any:
        try:
            return super().get(timeout=timeout)
        except NotImplementedError:
            pass
        try:
            return self.async_result.get(timeout=timeout)
        except gevent.Timeout as exc:
            raise pykka.Timeout(f"{timeout} seconds") from exc

    def set(self, value: Any = None) -> None:
        # Pykka's contract: a future is set once; a second set is a bug.
        if self.async_result.ready() or self._get_hook is not None:
            raise gevent.queue.Full
        self.async_result.set(value)

    def set_exception(self, exc_info: Any = None) -> None:
        if self.async_result.ready() or self._get_hook is not None:
            raise gevent.queue.Full
        if exc_info is None:
            import sys

            exc_info = sys.exc_info()
        exc_type, exc_value, exc_tb = exc_info
        if exc_value is None:
            exc_value = exc_type()
        self.async_result.set_exception(exc_value, exc_info=(exc_type, exc_value, exc_tb))


class _Inbox(gevent.queue.SimpleQueue):
    """A gevent queue that lets the hub run between two queued messages.

    ``get`` on a non-empty gevent queue returns without switching, so an actor
    with a backlog (a channel hit by a burst of broadcasts) would keep the hub
    to itself, and the writers it fills could not drain until it is done.
    Yielding first costs one switch per queued message and keeps them fair.
    """

    def get(self, *args: Any, **kwargs: Any) -> Any:
        if self.qsize():
            gevent.sleep(0)
        return super().get(*args, **kwargs)


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The ref keeps its own handle on the flag (``ActorRef.is_alive``).
        self.actor_stopped = self._actor_ref.actor_stopped = _StoppedFlag()  # type: ignore[assignment]

    @staticmethod
    def _create_actor_inbox() -> _Inbox:
        return _Inbox()

    @staticmethod
    def _create_future() -> GeventFuture:
        return GeventFuture()

    def _start_actor_loop(self) -> None:
        gevent.spawn(self._actor_loop)


def tell_if_alive(ref: pykka.ActorRef, message: Any) -> bool:
    """``ref.tell(message)``, or False when the actor already stopped.

    For messages that only matter while the receiver lives (a count, a
    "channel is empty"), sent during shutdown when owners stop first.
    """
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


def spawn(func: Any, *args: Any, **kwargs: Any) -> gevent.Greenlet:
    """Run ``func`` concurrently on the current hub (a greenlet)."""
    return gevent.spawn(func, *args, **kwargs)


def call_later(seconds: float, func: Any, *args: Any) -> gevent.Greenlet:
    """Run ``func(*args)`` after ``seconds``; ``.kill()`` the result to cancel."""
    return gevent.spawn_later(seconds, func, *args)


def sleep(seconds: float = 0) -> None:
    """Yield to other greenlets for ``seconds`` (0: just yield)."""
    gevent.sleep(seconds)


class HubThread:
    """The OS thread whose gevent hub runs a node's actors and sockets.

    Embedding code is usually plain threaded Python, so the node gets a hub
    of its own in a background thread, and :meth:`call` carries work into it
    from any thread (``loop.run_callback_threadsafe`` is gevent's one
    thread-safe door into a hub). When the process is monkey-patched, a
    "thread" is a greenlet, so the node simply shares the caller's hub.
    """

    def __init__(self, name: str = "actorcast-node") -> None:
        self.name = name
        self.hub: Any = None
        self.ident: int | None = None
        self._stop_event: gevent.event.Event | None = None
        self._thread: Any = None

    def start(self, setup: Any) -> Any:
        """Start the hub and run ``setup()`` in a greenlet on it; return its result."""
        if monkey.is_module_patched("threading"):
            self._adopt_current_hub()
            return self.call(setup)
        started = _OsEvent()
        box: list[Any] = []

        def main() -> None:
            self._adopt_current_hub()
            self._stop_event = gevent.event.Event()
            try:
                box.append((True, setup()))
            except BaseException as exc:  # handed to the starting thread, raised there
                box.append((False, exc))
            started.set()
            if box[0][0]:
                # A timed wait keeps a timer on the loop, so an idle hub keeps
                # serving calls from other threads instead of running dry.
                while not self._stop_event.wait(1.0):
                    pass

        self._thread = _OsThread(target=main, name=self.name, daemon=True)
        self._thread.start()
        started.wait()
        ok, value = box[0]
        if not ok:
            self._thread.join()
            raise value
        return value

    @staticmethod
    def os_event() -> Any:
        """A real ``threading.Event``, even in a monkey-patched process."""
        return _OsEvent()

    def _adopt_current_hub(self) -> None:
        self.hub = gevent.get_hub()
        self.ident = _os_get_ident()

    def in_hub(self) -> bool:
        """True when the caller already runs on this hub's OS thread."""
        return _os_get_ident() == self.ident

    def call(self, func: Any, *args: Any, timeout: float | None = None) -> Any:
        """Run ``func(*args)`` in a greenlet on the hub; wait for and return its result."""
        if self.in_hub():
            return func(*args)
        done = _OsEvent()
        box: list[Any] = []

        def run() -> None:
            try:
                box.append((True, func(*args)))
            except BaseException as exc:  # re-raised in the calling thread
                box.append((False, exc))
            finally:
                done.set()

        self.hub.loop.run_callback_threadsafe(gevent.spawn, run)
        if not done.wait(timeout):
            raise pykka.Timeout(f"{func!r} did not finish in {timeout} seconds")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def post(self, func: Any, *args: Any) -> None:
        """Run ``func(*args)`` on the hub soon, without waiting (it must not block)."""
        if self.in_hub():
            func(*args)
        else:
            self.hub.loop.run_callback_threadsafe(func, *args)

    def stop(self, timeout: float = 10.0) -> None:
        """Let the hub thread end (after the node closed everything on it)."""
        if self._thread is None:
            return
        event = self._stop_event
        self.post(event.set)
        if not self.in_hub():
            self._thread.join(timeout)
        self._thread = None


_OsThread = monkey.get_original("threading", "Thread")
_OsEvent = monkey.get_original("threading", "Event")
_os_get_ident = monkey.get_original("_thread", "get_ident")
