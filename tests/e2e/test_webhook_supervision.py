"""A webhook actor that dies of a bug is replaced at once: later events are still sent."""

from __future__ import annotations

import logging

import pytest

from actors.webhooks import WebhookActor
from tests.conftest import wait_until
from tests.e2e.test_webhooks import hooked, receiver  # noqa: F401  (a fixture)

pytestmark = pytest.mark.single_node(reason="plants a bug in this process's webhook actor")


class PlantedBug(RuntimeError):
    """Raised on purpose, to kill the webhook actor."""


@pytest.fixture
def fragile_webhooks(monkeypatch):
    """The channel_occupied of a channel named ``kill-hooks`` kills the webhook actor."""
    original = WebhookActor.offer

    def offer(self, event):
        if event.get("channel") == "kill-hooks" and event["name"] == "channel_occupied":
            raise PlantedBug("planted in offer")
        return original(self, event)

    monkeypatch.setattr(WebhookActor, "offer", offer)


@pytest.fixture
def errors():
    """ERROR records of actors.webhooks, as they come."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("actors.webhooks")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_a_dead_webhook_actor_is_restarted_with_one_line_and_later_events_are_delivered(
    make_node, receiver, open_client, fragile_webhooks, errors  # noqa: F811
):
    r = receiver()
    node = hooked(make_node, r)
    client = open_client(node)
    client.subscribe("kill-hooks")  # its channel_occupied kills the webhook actor
    wait_until(lambda: errors, message="the webhook actor's death")
    (line,) = [record.getMessage() for record in errors]
    assert line.startswith("webhook actor of app 1 died: PlantedBug: planted in offer at ") and "restarted" in line
    client.subscribe("news")  # told through the same ref the app actor always held
    assert r.wait(1) == [("channel_occupied", "news", None)]
    client.unsubscribe("news")
    assert r.wait(2) == [("channel_occupied", "news", None), ("channel_vacated", "news", None)]
    node.stop()  # the fresh actor drains and stops like the first: nothing more logged
    assert len(errors) == 1
