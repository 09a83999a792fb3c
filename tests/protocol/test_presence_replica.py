"""The presence replica of the other nodes (transport/presence.py): transitions out. No I/O."""

from __future__ import annotations

import random

from transport.presence import Change, RemotePresence

P = "presence-room"


def _empty(replica: RemotePresence) -> bool:
    """Nothing left behind, down to the inner dicts."""
    return len(replica) == 0 and not replica._channels and not replica._by_node and not replica.nodes()


# --- join ------------------------------------------------------------------------


def test_a_first_join_is_a_change_to_present():
    replica = RemotePresence()
    assert replica.join("A", P, "u1", {"n": 1}) == [Change(P, "u1", {"n": 1}, True)]
    assert replica.users(P) == {"u1": {"n": 1}}
    assert replica.channels() == [P]
    assert replica.nodes() == {"A"}
    assert len(replica) == 1


def test_a_join_from_the_same_node_again_updates_the_info_without_a_change():
    replica = RemotePresence()
    replica.join("A", P, "u1", {"n": 1})
    assert replica.join("A", P, "u1", {"n": 2}) == []
    assert replica.users(P) == {"u1": {"n": 2}}
    assert len(replica) == 1


def test_users_on_different_channels_are_independent():
    replica = RemotePresence()
    assert replica.join("A", "presence-a", "u1", None) == [Change("presence-a", "u1", None, True)]
    assert replica.join("A", "presence-b", "u1", None) == [Change("presence-b", "u1", None, True)]
    assert replica.channels() == ["presence-a", "presence-b"]
    assert replica.has_user("presence-a", "u1") and not replica.has_user("presence-c", "u1")


# --- leave -----------------------------------------------------------------------


def test_the_last_leave_is_a_change_to_absent_and_leaves_nothing_behind():
    replica = RemotePresence()
    replica.join("A", P, "u1", {"n": 1})
    assert replica.leave("A", P, "u1") == [Change(P, "u1", {"n": 1}, False)]
    assert replica.users(P) == {}
    assert replica.channels() == []
    assert _empty(replica)


def test_unknown_leaves_change_nothing():
    replica = RemotePresence()
    assert replica.leave("A", P, "u1") == []
    replica.join("A", P, "u1", None)
    assert replica.leave("B", P, "u1") == []
    assert replica.leave("A", P, "u2") == []
    assert replica.leave("A", "presence-other", "u1") == []
    assert replica.leave("A", P, "u1") == [Change(P, "u1", None, False)]
    assert replica.leave("A", P, "u1") == []
    assert _empty(replica)


def test_one_user_on_two_nodes_is_one_member():
    replica = RemotePresence()
    assert replica.join("A", P, "u1", {"via": "A"}) == [Change(P, "u1", {"via": "A"}, True)]
    assert replica.join("B", P, "u1", {"via": "B"}) == []
    assert replica.users(P) == {"u1": {"via": "A"}}
    assert len(replica) == 2
    assert replica.leave("A", P, "u1") == []
    assert replica.users(P) == {"u1": {"via": "B"}}
    assert replica.leave("B", P, "u1") == [Change(P, "u1", {"via": "B"}, False)]
    assert _empty(replica)


def test_users_shows_the_info_of_the_smallest_node_id_whatever_the_join_order():
    first, second = RemotePresence(), RemotePresence()
    first.join("A", P, "u1", "a")
    first.join("B", P, "u1", "b")
    second.join("B", P, "u1", "b")
    second.join("A", P, "u1", "a")
    assert first.users(P) == second.users(P) == {"u1": "a"}


def test_churn_leaves_nothing_behind():
    replica = RemotePresence()
    for round_ in range(50):
        for node in ("A", "B", "C"):
            for user in range(20):
                replica.join(node, f"presence-{user % 7}", f"u{user}", {"r": round_})
        for node in ("A", "B", "C"):
            for user in range(20):
                replica.leave(node, f"presence-{user % 7}", f"u{user}")
        assert _empty(replica)


# --- replace_node (a Sync) -----------------------------------------------------


def test_replace_node_on_an_unknown_node_adds_everything_in_order():
    replica = RemotePresence()
    changes = replica.replace_node("A", {"presence-b": {"u2": 2, "u1": 1}, "presence-a": {"u9": 9}})
    assert changes == [
        Change("presence-a", "u9", 9, True),
        Change("presence-b", "u1", 1, True),
        Change("presence-b", "u2", 2, True),
    ]
    assert replica.users("presence-b") == {"u2": 2, "u1": 1}


def test_replace_node_gives_the_diff_removals_first():
    replica = RemotePresence()
    replica.join("A", "presence-a", "keep", "old")
    replica.join("A", "presence-a", "gone", None)
    replica.join("A", "presence-b", "gone-too", None)
    replica.join("A", "presence-c", "shared", None)
    replica.join("B", "presence-c", "shared", None)
    changes = replica.replace_node("A", {"presence-a": {"keep": "new", "new": None}, "presence-d": {"x": 1}})
    assert changes == [
        Change("presence-a", "gone", None, False),
        Change("presence-b", "gone-too", None, False),
        # presence-c/shared is still on B: no change
        Change("presence-a", "new", None, True),
        Change("presence-d", "x", 1, True),
    ]
    assert replica.users("presence-a") == {"keep": "new", "new": None}
    assert replica.users("presence-c") == {"shared": None}
    assert replica.channels() == ["presence-a", "presence-c", "presence-d"]


def test_replace_node_with_nothing_forgets_the_node():
    replica = RemotePresence()
    replica.join("A", P, "u1", None)
    assert replica.replace_node("A", {P: {}}) == [Change(P, "u1", None, False)]
    assert replica.replace_node("A", {}) == []
    assert _empty(replica)


def test_replace_node_with_the_same_state_changes_nothing():
    replica = RemotePresence()
    state = {"presence-a": {"u1": 1, "u2": 2}}
    replica.replace_node("A", state)
    assert replica.replace_node("A", state) == []
    assert len(replica) == 2


# --- drop_node -------------------------------------------------------------------


def test_drop_node_removes_only_users_no_other_node_has():
    replica = RemotePresence()
    replica.join("A", "presence-b", "u2", 2)
    replica.join("A", "presence-a", "u1", 1)
    replica.join("A", "presence-a", "u0", 0)
    replica.join("B", "presence-a", "u1", "b1")
    assert replica.drop_node("A") == [Change("presence-a", "u0", 0, False), Change("presence-b", "u2", 2, False)]
    assert replica.users("presence-a") == {"u1": "b1"}
    assert replica.nodes() == {"B"}
    assert replica.drop_node("A") == []
    assert replica.drop_node("B") == [Change("presence-a", "u1", "b1", False)]
    assert _empty(replica)


def test_the_replica_shares_no_dict_with_its_callers():
    replica = RemotePresence()
    state = {P: {"u1": 1}}
    replica.replace_node("A", state)
    state[P]["u2"] = 2  # the caller's dict changing later does not change the replica
    assert replica.users(P) == {"u1": 1}
    replica.users(P)["u3"] = 3
    assert replica.users(P) == {"u1": 1}


# --- against a naive model ------------------------------------------------------


class Model:
    """The obvious (slow) replica: a set of (node, channel, user) with their infos."""

    def __init__(self) -> None:
        self.info: dict[tuple[str, str, str], object] = {}

    def present(self) -> set[tuple[str, str]]:
        return {(channel, user) for _, channel, user in self.info}

    def users(self, channel: str) -> dict[str, object]:
        nodes: dict[str, list[str]] = {}
        for node, c, user in self.info:
            if c == channel:
                nodes.setdefault(user, []).append(node)
        return {user: self.info[(min(ns), channel, user)] for user, ns in nodes.items()}

    def apply(self, op: str, *args) -> tuple[list[Change], list[Change]]:
        """Apply ``op``; the expected (removals, additions)."""
        before = self.present()
        old = dict(self.info)
        if op == "join":
            node, channel, user, info = args
            self.info[(node, channel, user)] = info
        elif op == "leave":
            self.info.pop(args, None)
        elif op == "replace":
            node, members = args
            self.info = {k: v for k, v in self.info.items() if k[0] != node}
            for channel, users in members.items():
                for user, info in users.items():
                    self.info[(node, channel, user)] = info
        elif op == "drop":
            self.info = {k: v for k, v in self.info.items() if k[0] != args[0]}
        after = self.present()
        node = args[0]

        def removed_info(channel: str, user: str) -> object:
            # The info of the last node to let go: the node this op is about.
            return old[(node, channel, user)]

        removals = [Change(c, u, removed_info(c, u), False) for c, u in sorted(before - after)]
        additions = [Change(c, u, self.info[(node, c, u)], True) for c, u in sorted(after - before)]
        return removals, additions


def test_the_replica_agrees_with_a_naive_model_under_random_operations():
    rng = random.Random(9)
    nodes, channels, users = ["A", "B", "C", "D"], ["presence-1", "presence-2", "presence-3"], ["u1", "u2", "u3", "u4"]
    for run in range(30):
        replica, model = RemotePresence(), Model()
        for step in range(300):
            roll = rng.random()
            node = rng.choice(nodes)
            if roll < 0.45:
                args = (node, rng.choice(channels), rng.choice(users), rng.randrange(5))
                removals, additions = model.apply("join", *args)
                changes = replica.join(*args)
            elif roll < 0.85:
                args = (node, rng.choice(channels), rng.choice(users))
                removals, additions = model.apply("leave", *args)
                changes = replica.leave(*args)
            elif roll < 0.95:
                members = {
                    c: {u: rng.randrange(5) for u in rng.sample(users, rng.randrange(len(users) + 1))}
                    for c in rng.sample(channels, rng.randrange(len(channels) + 1))
                }
                removals, additions = model.apply("replace", node, members)
                changes = replica.replace_node(node, members)
            else:
                removals, additions = model.apply("drop", node)
                changes = replica.drop_node(node)
            assert changes == removals + additions, (run, step)
            assert len(replica) == len(model.info)
            assert replica.nodes() == {n for n, _, _ in model.info}
            assert replica.channels() == sorted({c for _, c, _ in model.info})
            for channel in channels:
                assert replica.users(channel) == model.users(channel)
        for node in nodes:
            replica.drop_node(node)
        assert _empty(replica)


# --- the registry of a cluster: the member limit in one order ------------------------------


def test_an_ask_under_the_limit_is_admitted_as_a_join():
    registry = RemotePresence()
    assert registry.ask("A", P, "u1", {"n": 1}, 2) == (True, [Change(P, "u1", {"n": 1}, True)])
    assert registry.ask("B", P, "u2", None, 2) == (True, [Change(P, "u2", None, True)])
    assert registry.count(P) == 2


def test_an_ask_of_a_new_user_at_the_limit_is_refused_and_changes_nothing():
    registry = RemotePresence()
    registry.ask("A", P, "u1", None, 1)
    assert registry.ask("B", P, "u2", None, 1) == (False, [])
    assert registry.users(P) == {"u1": None}
    assert registry.held("B", P) == [] and registry.nodes() == {"A"}


def test_an_ask_of_a_user_present_elsewhere_is_admitted_at_the_limit_without_a_change():
    registry = RemotePresence()
    registry.ask("A", P, "u1", None, 1)
    assert registry.ask("B", P, "u1", None, 1) == (True, [])
    assert registry.held("B", P) == ["u1"]
    assert registry.leave("A", P, "u1") == []  # still on B: no flap
    assert registry.users(P) == {"u1": None}


def test_every_registry_fed_one_order_gives_the_same_answers():
    rng = random.Random(7)
    stream = []
    for _ in range(400):
        node, user = rng.choice("ABC"), f"u{rng.randrange(6)}"
        stream.append((rng.random() < 0.6, node, user))
    answers = []
    for _ in range(2):
        registry, seen = RemotePresence(), []
        for joined, node, user in stream:
            if joined:
                seen.append(registry.ask(node, P, user, None, 3)[0])
            else:
                registry.leave(node, P, user)
            assert registry.count(P) <= 3
        answers.append((seen, registry.users(P), {n: registry.held(n, P) for n in "ABC"}))
    assert answers[0] == answers[1]


def test_held_by_lists_one_nodes_users_per_channel():
    registry = RemotePresence()
    registry.join("A", "presence-a", "u2", None)
    registry.join("A", "presence-a", "u1", None)
    registry.join("A", "presence-b", "u1", None)
    registry.join("B", "presence-b", "u3", None)
    assert registry.held_by("A") == {"presence-a": ["u1", "u2"], "presence-b": ["u1"]}
    assert registry.held_by("C") == {}
    assert registry.count("presence-b") == 2 and registry.count("presence-c") == 0
