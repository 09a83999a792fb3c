"""Restart in place: a fresh actor takes a dead one's ref, and what was queued behind the death.

For actors whose ref is held all over the node (the metrics actor by every
channel and connection, a webhook actor by its app's actors): handing each of
them a new ref would race with the messages already on their way. Instead the
dead actor's own ref is pointed at its successor, in the dead actor's
``on_died`` (its greenlet, so nothing can be told in between), after the
envelopes still in its inbox were moved over in order (a stop or an ask among
them is answered by the successor).
"""

from __future__ import annotations

from typing import Any

import pykka

__all__ = ["hand_over"]


def hand_over(dead: Any, fresh: pykka.ActorRef[Any]) -> None:
    """From now on ``dead.actor_ref`` reaches the actor behind ``fresh``, which got ``dead``'s queue."""
    for envelope in dead.actor_inbox.take_all():
        fresh.actor_inbox.put(envelope)
    ref = dead.actor_ref
    ref.__dict__.pop("_actorcast_proxy", None)  # the dead actor's cached proxy (runtime.proxy_of)
    ref.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "_actorcast_proxy"})
