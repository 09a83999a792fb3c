"""A web chat on actorcast: ``python -m examples.chat`` (see examples/README.md).

``webapp.ChatApp`` is the WSGI app (page, pusher-js auth endpoints, messages),
``checks`` what it accepts from a browser, ``__main__`` starts a node and the
web app in one process.
"""

from .checks import Refused, User
from .webapp import ChatApp, History

__all__ = ["ChatApp", "History", "Refused", "User"]
