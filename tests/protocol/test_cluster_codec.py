"""The cluster message codec (transport/cluster.py): messages to bytes and back. No I/O."""

from __future__ import annotations

import json
import random

import pytest

from transport import cluster
from transport.cluster import (
    Admit,
    Count,
    Release,
    KINDS,
    Answer,
    Bye,
    Heartbeat,
    Member,
    Occupancy,
    Publish,
    Request,
    SubscriptionCounts,
    Sync,
    SyncRequest,
    TerminateUser,
    WebhookLog,
    decode,
    encode,
)
from transport.errors import ProtocolError
from transport.frames import OP_TEXT, FrameDecoder, text_frame

EVENT = '{"event":"greet","channel":"news","data":"{\\"text\\":\\"hé / \\u2028 😀\\"}"}'

SAMPLES = [
    Publish("node-1", "app", (("news", EVENT), ("private-é", '{"event":"x","data":"{}"}')), None),
    Publish("node-1", "app", (), "123.456"),
    Publish("node-1", "app", (("news", EVENT),), None, 42),
    Member("node-2", "app", "presence-room", "user-1", {"name": "Zoë", "tags": ["a", 1, 2.5, None, True]}, True),
    Member("node-2", "app", "presence-room", "user-1", None, False),
    Member("node-2", "app", "presence-room", "user-1", {"name": "Zoë"}, True, True, 7),
    Occupancy("node-2", "app", "news", True),
    SubscriptionCounts("node-2", "app", {"news": 3, "gone": 0, "é": 2**40}, False),
    SubscriptionCounts("node-2", "app", {}, True),
    Heartbeat("node-3", 0),
    Heartbeat("node-3", 2**70),
    Bye("node-3"),
    SyncRequest("node-4"),
    Sync("node-1", "node-4", "app", {"presence-a": {"u1": {"n": "\u2028"}, "u2": None}, "presence-b": {}}),
    Sync("node-1", "", "app", {}),
    TerminateUser("node-1", "app", "user-ü"),
    Request("node-1", "req-1", "app", "channels", {"filter_by_prefix": "presence-", "info": ["user_count"]}),
    Request("node-1", "req-2", "app", "users", {}),
    Answer("node-2", "node-1", "req-1", {"presence-a": {"user_count": 2}}),
    Answer("node-2", "node-1", "req-2", None),
    Answer("node-2", "node-1", "req-3", [1, "два", {"k": False}]),
    Admit("node-1", "1", "node-1:7"),
    Release("node-1", "1", 3),
    Count("node-2", "1", 0),
    WebhookLog("node-1", "1", ((1, "channel_vacated", "news", None), (2, "member_added", "presence-é", "u1")),
               ((1, 0), (2, 1))),
    WebhookLog("node-1", "1", (), ((7, 0),)),
]


def _kind(message) -> str:
    return type(message).__name__


# --- round trips -----------------------------------------------------------------


@pytest.mark.parametrize("message", SAMPLES, ids=_kind)
def test_every_message_survives_a_round_trip(message):
    data = encode(message)
    assert isinstance(data, bytes)
    decoded = decode(data)
    assert decoded == message
    assert type(decoded) is type(message)


def test_every_kind_has_a_sample_and_a_distinct_wire_name():
    assert {type(m) for m in SAMPLES} == set(KINDS.values())
    assert len(set(KINDS.values())) == len(KINDS)
    for kind, cls in KINDS.items():
        assert cls.__name__ in cluster.__all__
        assert any(json.loads(encode(m))["k"] == kind for m in SAMPLES if type(m) is cls)


def test_publish_frames_come_back_as_tuples_and_frame_unchanged():
    message = decode(encode(SAMPLES[0]))
    assert isinstance(message.frames, tuple)
    assert all(isinstance(pair, tuple) for pair in message.frames)
    [received] = FrameDecoder(require_mask=False).feed(text_frame(message.frames[0][1]))
    assert received.opcode == OP_TEXT
    assert received.text == EVENT


def test_a_large_publish_survives_a_round_trip():
    big = json.dumps({"event": "big", "channel": "c", "data": "é" * 1_000_000}, ensure_ascii=False)
    message = Publish("n", "app", tuple((f"channel-{i}", big if i == 0 else EVENT) for i in range(2000)), "1.2")
    assert decode(encode(message)) == message


def test_encoding_is_compact_and_keeps_text_as_it_is():
    data = encode(Member("n/1", "app", "presence-é", "u\u2028", {"url": "https://x/y"}, True))
    text = data.decode("utf-8")
    assert ": " not in text and ", " not in text
    assert "\\/" not in text and "https://x/y" in text
    assert "presence-é" in text
    assert text.startswith('{"k":"mem",')


def test_unknown_keys_are_ignored_so_newer_nodes_may_add_fields():
    data = json.loads(encode(Heartbeat("n", 3)))
    data["future"] = {"anything": [1, 2]}
    assert decode(json.dumps(data).encode()) == Heartbeat("n", 3)


def test_decode_accepts_bytearray_and_memoryview():
    data = encode(Bye("n"))
    assert decode(bytearray(data)) == Bye("n")
    assert decode(memoryview(data)) == Bye("n")


def test_encode_refuses_what_is_not_a_cluster_message():
    with pytest.raises(TypeError):
        encode(("hb", "n", 1))  # type: ignore[arg-type]


def test_encode_refuses_values_json_cannot_carry():
    with pytest.raises((ValueError, OverflowError)):
        encode(Answer("n", "m", "r", float("nan")))


# --- malformed input ---------------------------------------------------------------


#: (kind, wire key) of fields with a default (added later): a message may leave them out.
DEFAULTED = {(Publish, "s"), (Member, "e"), (Member, "s")}


def _wire(message) -> dict:
    return json.loads(encode(message))


def _raw(obj) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"{",
        b'{"k":"hb","o":"n","s":1',
        b"[]",
        b'"hb"',
        b"null",
        b"42",
        b"\xff\xfe{}",
        b'{"k":"hb","o":"n\xc3","s":1}',
        b'{"k":"bye","o":"\xed\xa0\x80"}',  # a UTF-8-encoded surrogate
        b"[" * 5000 + b"]" * 5000,
        b'{"k":"hb","o":"n","s":NaN}',
    ],
)
def test_bytes_that_are_not_a_json_object_raise_protocol_error(data):
    with pytest.raises(ProtocolError) as info:
        decode(data)
    assert info.value.code is None


@pytest.mark.parametrize("data", [None, 42, ["hb"], {"k": "hb"}])
def test_a_value_that_is_not_bytes_raises_protocol_error(data):
    with pytest.raises(ProtocolError):
        decode(data)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", [None, 1, "", "HB", "heartbeat", "\ud800", ["hb"]])
def test_an_unknown_or_missing_kind_raises_protocol_error(kind):
    obj = {"o": "n", "s": 1}
    if kind is not None:
        obj["k"] = kind
    with pytest.raises(ProtocolError):
        decode(json.dumps(obj).encode())


@pytest.mark.parametrize(
    "message, key",
    [(message, key) for message in SAMPLES for key in _wire(message) if key != "k" and (type(message), key) not in DEFAULTED],
    ids=lambda v: v if isinstance(v, str) else _kind(v),
)
def test_every_missing_field_raises_protocol_error(message, key):
    obj = _wire(message)
    del obj[key]
    with pytest.raises(ProtocolError, match="missing"):
        decode(_raw(obj))


def test_a_field_added_later_gets_its_default_when_an_older_node_leaves_it_out():
    obj = _wire(Publish("node-1", "app", (("news", EVENT),), None, 42))
    del obj["s"]
    assert decode(_raw(obj)) == Publish("node-1", "app", (("news", EVENT),), None, 0)


#: Wire key -> values of the wrong type for it.
WRONG = {
    "o": [None, 1, "", ["n"], {"n": 1}, True],
    "a": [None, 1, ["app"], {}, False],
    "c": [None, 2.5, ["c"]],
    "u": [None, 7, {"id": 1}],
    "t": [None, 0, []],
    "r": [None, 1, ["r"]],
    "q": [None, 1, {}],
    "x": [1, [], {}, True],
    "j": [None, 0, 1, "true", []],
    "b": [None, 0, 1, "true", []],
    "s": [None, "1", 1.0, 1.5, True, [], {}],
    "f": [None, "news", {}, [["c"]], [["c", "e", "x"]], [["c", 1]], [[1, "e"]], ["ce"], [None], [{"c": "e"}]],
    "m": [None, [], "x", {"c": []}, {"c": "u"}, {"c": None}, {"c": {"u": 1}, "d": 2}],
    "p": [None, [], "x", 1],
    "w": [None, {}, "x", [[1, "channel_vacated", "news"]], [["1", "channel_vacated", "news", None]],
          [[True, "channel_vacated", "news", None]], [[1, "client_event", "news", None]],
          [[1, ["channel_vacated"], "news", None]], [[1, "channel_vacated", 5, None]],
          [[1, "channel_vacated", "news", "u1"]], [[1, "member_added", "presence-a", None]],
          [[1, "member_added", "presence-a", 3]], [{"seq": 1}]],
    "d": [None, {}, [[1]], [[1, "0"]], [["1", 0]], [[1, 0, 2]], [[1.5, 0]], [[1, True]], [1]],
    "n": [None, [], "x", {"c": -1}, {"c": 1.0}, {"c": True}, {"c": "1"}, {"c": None}],
    "z": [None, 0, 1, "true", []],
}


@pytest.mark.parametrize(
    "message, key, value",
    [(m, k, v) for m in SAMPLES for k in _wire(m) if k in WRONG for v in WRONG[k]],
    ids=lambda v: _kind(v) if isinstance(v, tuple) else repr(v),
)
def test_every_mistyped_field_raises_protocol_error(message, key, value):
    obj = _wire(message)
    obj[key] = value
    with pytest.raises(ProtocolError):
        decode(_raw(obj))


LONE = "\\ud800"  # as it appears in JSON text: legal JSON, a lone surrogate in Python


@pytest.mark.parametrize(
    "text",
    [
        '{"k":"bye","o":"n%s"}' % LONE,
        '{"k":"term","o":"n","a":"app","u":"%s"}' % LONE,
        '{"k":"pub","o":"n","a":"app","f":[["c%s","{}"]],"x":null}' % LONE,
        '{"k":"pub","o":"n","a":"app","f":[["c","{\\"e\\":\\"%s\\"}"]],"x":null}' % LONE,
        '{"k":"pub","o":"n","a":"app","f":[],"x":"1.%s"}' % LONE,
        '{"k":"mem","o":"n","a":"app","c":"p","u":"u","i":{"name":"%s"},"j":true}' % LONE,
        '{"k":"mem","o":"n","a":"app","c":"p","u":"u","i":{"%s":1},"j":true}' % LONE,
        '{"k":"sync","o":"n","t":"","a":"app","m":{"c%s":{}}}' % LONE,
        '{"k":"sync","o":"n","t":"","a":"app","m":{"c":{"u%s":null}}}' % LONE,
        '{"k":"req","o":"n","r":"1","a":"app","q":"users","p":{"k":["%s"]}}' % LONE,
        '{"k":"ans","o":"n","t":"m","r":"1","v":"%s"}' % LONE,
        '{"k":"whl","o":"n","a":"1","w":[[1,"channel_vacated","c%s",null]],"d":[]}' % LONE,
        '{"k":"whl","o":"n","a":"1","w":[[1,"member_added","c","u%s"]],"d":[]}' % LONE,
        '{"k":"subs","o":"n","a":"app","n":{"c%s":1},"z":false}' % LONE,
    ],
)
def test_a_lone_surrogate_anywhere_raises_protocol_error(text):
    with pytest.raises(ProtocolError, match="surrogate"):
        decode(text.encode())


def test_an_escaped_surrogate_pair_is_fine():
    message = decode(b'{"k":"bye","o":"n\\ud83d\\ude00"}')
    assert message == Bye("n\U0001f600")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "[1, NaN]", '{"a": Infinity}'])
def test_nan_or_infinity_in_a_json_value_raises_protocol_error(value):
    for text in (
        '{"k":"ans","o":"n","t":"m","r":"1","v":%s}' % value,
        '{"k":"mem","o":"n","a":"app","c":"p","u":"u","i":%s,"j":true}' % value,
        '{"k":"sync","o":"n","t":"","a":"app","m":{"c":{"u":%s}}}' % value,
        '{"k":"req","o":"n","r":"1","a":"app","q":"users","p":{"x":%s}}' % value,
    ):
        with pytest.raises(ProtocolError):
            decode(text.encode())


# --- fuzz: decode returns a valid message or raises ProtocolError, nothing else -------

RANDOM_VALUES = [None, True, False, 0, -1, 2**64, 1.5, "", "x", "é", "\u2028", [], {}, ["a", "b"], [[1]], {"a": {}}]


def _mutate_json(rng: random.Random, message) -> bytes:
    obj = _wire(message)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(sorted(obj) + ["k", "zz"])
        action = rng.random()
        if action < 0.3:
            obj.pop(key, None)
        elif action < 0.8:
            obj[key] = rng.choice(RANDOM_VALUES)
        else:
            obj[key] = rng.choice(list(KINDS))
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode()


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        action = rng.random()
        at = rng.randrange(len(buf) + 1)
        if action < 0.35 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif action < 0.6:
            buf[at:at] = rng.choice([b"\\ud800", b"\xed\xa0\x80", b'"', b",", b"{", b"]", b"\\", b"NaN", b"\xff", b"\x00"])
        elif action < 0.8:
            del buf[at : at + rng.randint(1, 8)]
        else:
            buf = buf[:at]
    return bytes(buf)


def _assert_valid(message) -> None:
    assert type(message) in KINDS.values()
    for name, value in zip(message._fields, message):
        if name in ("user_info", "value", "params", "members", "frames", "queued", "finished"):
            continue
        if name == "seq":
            assert isinstance(value, int) and not isinstance(value, bool)
        elif name in ("joined", "occupied", "snapshot", "ask"):
            assert isinstance(value, bool)
        elif name == "counts":
            assert all(isinstance(c, str) and type(n) is int and n >= 0 for c, n in value.items())
        elif name == "except_socket_id":
            assert value is None or isinstance(value, str)
        else:
            assert isinstance(value, str)
    # Whatever decode accepts can be sent on: it encodes and comes back the same.
    assert decode(encode(message)) == message


def test_fuzzed_encodings_decode_to_valid_messages_or_raise_protocol_error():
    rng = random.Random(20240609)
    outcomes = {"valid": 0, "refused": 0}
    for i in range(1200):
        message = rng.choice(SAMPLES)
        data = _mutate_json(rng, message) if i % 2 else _mutate_bytes(rng, encode(message))
        try:
            decoded = decode(data)
        except ProtocolError:
            outcomes["refused"] += 1
        else:
            _assert_valid(decoded)
            outcomes["valid"] += 1
    # The mutations reach both outcomes, so the test proves something either way.
    assert outcomes["valid"] > 20 and outcomes["refused"] > 500


def test_a_member_from_an_older_node_is_a_join_taken_as_it_is():
    obj = _wire(Member("n", "app", "presence-room", "u1", None, True))
    del obj["e"], obj["s"]
    assert decode(_raw(obj)) == Member("n", "app", "presence-room", "u1", None, True, False, 0)


def test_a_plain_publish_decodes_the_same_on_the_fast_path_as_on_the_checked_one():
    # decode() checks the common publish inline; one key more sends the same message the general
    # way (unknown keys are ignored there), so the two must agree, field for field and type for type.
    rng = random.Random(7)
    texts = ["", "news", "private-é", EVENT, '{"event":"x","data":"{}"}', "😀 / \u2028"]
    for _ in range(500):
        frames = tuple((rng.choice(texts), rng.choice(texts)) for _ in range(rng.randrange(4)))
        message = Publish(rng.choice(["n", "node-1"]), rng.choice(["", "app"]), frames,
                          rng.choice([None, "1.2"]), rng.randrange(3))
        data = encode(message)
        general = decode(data[:-1] + b',"later":1}')
        assert decode(data) == general == message
        assert all(type(pair) is tuple for pair in decode(data).frames)
    for bad in ({"o": ""}, {"s": True}, {"f": [["news"]]}, {"f": [["news", 1]]}, {"x": 5}, {"a": None}):
        obj = {"k": "pub", "o": "n", "a": "app", "f": [], "x": None, "s": 0, **bad}
        with pytest.raises(ProtocolError):
            decode(json.dumps(obj).encode())
