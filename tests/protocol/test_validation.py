"""Every string from the network is checked where it enters: one test per field and rule.

A JSON ``"\\ud800"`` escape is legal JSON but decodes to a lone surrogate, which
raises ``UnicodeEncodeError`` at the first UTF-8 encode (an HMAC, a frame). These
tests feed such text (and NaN, control characters, wrong types) to the pure
parsers and prove each gives the Pusher error the protocol prescribes, with a
message that itself encodes as UTF-8. No sockets.

``json.dumps`` (ensure_ascii) writes a Python lone surrogate as the escape, so
``raw(...)`` below produces exactly the text a hostile client would send.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest

from transport import auth, text
from transport.config import App, AppTable
from transport.errors import AuthError, ProtocolError
from transport.http_api import Response, handle_request
from transport.http_signing import sign_request
from transport.names import INVALID_NAME_CODE, check_event_name_characters, validate_event_name
from transport.protocol import UNAUTHORIZED, ClientEvent, Signin, Subscribe, Unknown, Unsubscribe, parse_client_message

LONE = ["\ud800", "\udfff", "\udc00\ud800"]  # high, low, a pair in the wrong order
PAIR = "\ud83d\ude00"  # as escapes this is one valid code point: U+1F600
KEY, SECRET, SOCKET_ID = "app-key", "app-secret", "123.456"
NOW = 1_700_000_000


def raw(message: Any) -> str:
    """JSON text with every non-ASCII character (and lone surrogate) as a \\u escape."""
    return json.dumps(message)


def refused(text: str | bytes, code: int | None = None, *, fatal: bool = False) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(text)
    error = info.value
    assert (error.code, error.fatal) == (code, fatal), repr(error)
    error.message.encode("utf-8")  # the error frame can be built from it
    return error


# --- the helpers -----------------------------------------------------------------


@pytest.mark.parametrize("lone", LONE)
def test_lone_surrogates_are_found_and_a_valid_pair_is_not(lone):
    assert text.has_lone_surrogate(f"evt{lone}")
    assert not text.has_lone_surrogate("evt" + json.loads(raw(PAIR)))
    assert not text.has_lone_surrogate("plain ascii")


def test_ujson_joins_an_escaped_surrogate_pair_into_one_code_point():
    parsed = parse_client_message(raw({"event": "client-x", "channel": "private-a", "data": PAIR}))
    assert parsed.data == "\U0001f600"


def test_unicode_escapes_are_detected_in_str_and_bytes():
    assert text.has_unicode_escape('{"a":"\\u0041"}')
    assert text.has_unicode_escape(b'{"a":"\\u0041"}')
    assert not text.has_unicode_escape('{"a":"\\n"}')


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"a": float("nan")}, text.NOT_FINITE),
        ([1, [float("inf")]], text.NOT_FINITE),
        (float("-inf"), text.NOT_FINITE),
        ({"k": "\ud800"}, text.LONE_SURROGATE),
        ({"\udfff": 1}, text.LONE_SURROGATE),
        ("\ud800", text.LONE_SURROGATE),
        ({"ok": [1, 2.5, None, True, "x", "\U0001f600"]}, None),
        (10**100, None),
    ],
)
def test_json_problem_names_what_cannot_be_sent_on(value, problem):
    assert text.json_problem(value) == problem


def test_json_problem_skips_the_surrogate_scan_when_asked():
    assert text.json_problem({"k": "\ud800"}, surrogates=False) is None


def test_printable_escapes_lone_surrogates_so_the_text_encodes():
    assert text.printable("a\ud800b") == "a\\ud800b"
    assert text.printable("naïve") == "naïve"


def test_strict_utf8_decoding_refuses_encoded_surrogates():
    assert text.decode_utf8(b"\xed\xa0\x80") is None
    assert text.decode_utf8(b"\xff") is None
    assert text.decode_utf8("é".encode()) == "é"


# --- client messages: the envelope -------------------------------------------------


@pytest.mark.parametrize("data", [b'{"event":"pusher:ping","x":"\xed\xa0\x80"}', b'{"event":"\xff"}'])
def test_bytes_that_are_not_utf8_are_invalid_json(data):
    assert "JSON" in refused(data).message


@pytest.mark.parametrize("lone", LONE)
def test_an_unknown_event_name_with_a_lone_surrogate_is_a_4302(lone):
    refused(raw({"event": f"my-event{lone}"}), INVALID_NAME_CODE)


@pytest.mark.parametrize("control", ["\x00", "\n", "\x1f", "\x7f", "\x85"])
def test_an_event_name_with_a_control_character_is_a_4302(control):
    refused(raw({"event": f"client-a{control}b", "channel": "private-a"}), INVALID_NAME_CODE)
    refused(raw({"event": f"unknown{control}"}), INVALID_NAME_CODE)


def test_event_names_may_still_hold_spaces_and_any_printable_unicode():
    assert parse_client_message(raw({"event": f"my event é {PAIR}"})) == Unknown("my event é \U0001f600")


# --- pusher:subscribe / unsubscribe -----------------------------------------------


@pytest.mark.parametrize("lone", LONE)
def test_a_subscribe_channel_with_a_lone_surrogate_is_a_4302(lone):
    refused(raw({"event": "pusher:subscribe", "data": {"channel": f"private-{lone}"}}), INVALID_NAME_CODE)


def test_a_lone_surrogate_in_double_encoded_subscribe_data_is_found_too():
    inner = raw({"channel": "news\ud800"})
    refused(raw({"event": "pusher:subscribe", "data": inner}), INVALID_NAME_CODE)


def test_an_unsubscribe_channel_with_a_lone_surrogate_is_a_4302():
    refused(raw({"event": "pusher:unsubscribe", "data": {"channel": "news\udfff"}}), INVALID_NAME_CODE)
    assert parse_client_message(raw({"event": "pusher:unsubscribe", "data": {"channel": "news"}})) == Unsubscribe("news")


def test_subscribe_auth_and_channel_data_are_left_to_transport_auth():
    # Their answer is a pusher:subscription_error, which the subscribe path sends.
    text_ = raw({"event": "pusher:subscribe", "data": {"channel": "presence-a", "auth": "k:\ud800",
                                                         "channel_data": '{"user_id":"\ud800"}'}})
    assert parse_client_message(text_) == Subscribe("presence-a", "k:\ud800", '{"user_id":"\ud800"}')


# --- pusher:signin -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["auth", "user_data"])
def test_a_signin_field_with_a_lone_surrogate_closes_with_4009(field):
    data = {"auth": "app-key:00", "user_data": '{"id":"u1"}'}
    data[field] = data[field] + "\ud800"
    error = refused(raw({"event": "pusher:signin", "data": data}), UNAUTHORIZED, fatal=True)
    assert field in error.message


def test_a_valid_signin_with_escaped_unicode_parses():
    message = raw({"event": "pusher:signin", "data": {"auth": "app-key:00", "user_data": '{"id":"é"}'}})
    assert parse_client_message(message) == Signin("app-key:00", '{"id":"é"}')


# --- client events -------------------------------------------------------------------


@pytest.mark.parametrize("lone", LONE)
def test_a_client_event_name_with_a_lone_surrogate_is_a_4302(lone):
    refused(raw({"event": f"client-{lone}", "channel": "private-a", "data": "x"}), INVALID_NAME_CODE)


def test_a_client_event_channel_with_a_lone_surrogate_is_a_4302():
    refused(raw({"event": "client-x", "channel": "private-\ud800", "data": "x"}), INVALID_NAME_CODE)


@pytest.mark.parametrize(
    "data",
    ["\ud800", "ok\udfff", {"a": "\ud800"}, {"\ud800": 1}, [1, [2, {"deep": ["\udc00"]}]]],
)
def test_client_event_data_with_a_lone_surrogate_is_refused(data):
    error = refused(raw({"event": "client-x", "channel": "private-a", "data": data}))
    assert "surrogate" in error.message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", '{"a":[NaN]}', '{"a":{"b":-1e999}}'])
def test_client_event_data_json_cannot_carry_is_refused(literal):
    error = refused('{"event":"client-x","channel":"private-a","data":%s}' % literal)
    assert "NaN or Infinity" in error.message


@pytest.mark.parametrize(
    "data", [PAIR, {"emoji": PAIR}, "\\ud800 as text", "é\u0000\n", 1.5, 10**30, None, [], {"n": {"m": [1, "x"]}}]
)
def test_client_event_data_that_reencodes_as_json_passes(data):
    parsed = parse_client_message(raw({"event": "client-x", "channel": "private-a", "data": data}))
    assert parsed == ClientEvent("client-x", "private-a", json.loads(raw(data)))


def test_deeply_nested_client_event_data_raises_nothing_but_a_protocol_error():
    for depth in (100, 1023, 5000):
        message = '{"event":"client-x","channel":"private-a","data":%s}' % ("[" * depth + "]" * depth)
        try:
            parse_client_message(message)
        except ProtocolError as error:
            error.message.encode("utf-8")


# --- names -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["evt\ud800", "\udfff", "a\x00", "tab\tname", "del\x7f", "c1\x9f"])
def test_validate_event_name_refuses_control_characters_and_lone_surrogates(name):
    for check in (validate_event_name, check_event_name_characters):
        with pytest.raises(ProtocolError) as info:
            check(name)
        assert info.value.code == INVALID_NAME_CODE
        info.value.message.encode("utf-8")


def test_the_event_name_message_points_at_the_bad_character_escaped():
    with pytest.raises(ProtocolError, match=r"lone surrogate \('\\ud800'\)"):
        validate_event_name("evt\ud800")


# --- transport/auth: defence in depth --------------------------------------------------


def _auth_error(call: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call()
    info.value.message.encode("utf-8")
    return info.value


def test_a_channel_auth_with_a_lone_surrogate_is_an_auth_error():
    error = _auth_error(lambda: auth.verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-a", f"{KEY}:\ud800"))
    assert isinstance(error, AuthError) and error.status == 401


def test_an_auth_key_part_with_a_lone_surrogate_is_an_auth_error():
    error = _auth_error(lambda: auth.verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-a", "\ud800:abc"))
    assert isinstance(error, AuthError)


def test_presence_channel_data_with_a_lone_surrogate_is_a_protocol_error_not_an_auth_error():
    channel_data = '{"user_id":"\ud800"}'
    signature = f"{KEY}:" + "0" * 64
    error = _auth_error(
        lambda: auth.verify_channel_auth(KEY, SECRET, SOCKET_ID, "presence-a", signature, channel_data)
    )
    assert not isinstance(error, AuthError) and error.code is None
    assert "channel_data" in error.message


def test_signin_user_data_with_a_lone_surrogate_is_a_protocol_error():
    error = _auth_error(lambda: auth.verify_user_auth(KEY, SECRET, SOCKET_ID, '{"id":"\ud800"}', f"{KEY}:00"))
    assert not isinstance(error, AuthError) and "user_data" in error.message


def test_signin_auth_with_a_lone_surrogate_is_an_auth_error():
    assert isinstance(_auth_error(lambda: auth.verify_user_auth(KEY, SECRET, SOCKET_ID, "{}", f"{KEY}:\udfff")), AuthError)


@pytest.mark.parametrize("parse", [auth.parse_presence_channel_data, auth.parse_user_data])
@pytest.mark.parametrize("value", ["\ud800", '{"user_id":"\ud800","id":"\ud800"}', "not json \ud800"])
def test_parsing_signed_data_with_a_lone_surrogate_is_a_protocol_error(parse, value):
    _auth_error(lambda: parse(value))


def test_a_valid_signature_over_escaped_unicode_still_verifies():
    channel_data = json.dumps({"user_id": "é", "user_info": {"name": PAIR}})  # escapes, all valid
    signature = auth.make_channel_auth(KEY, SECRET, SOCKET_ID, "presence-a", channel_data)
    auth.verify_channel_auth(KEY, SECRET, SOCKET_ID, "presence-a", signature, channel_data)
    assert auth.parse_presence_channel_data(channel_data).user_info == {"name": "\U0001f600"}


# --- the HTTP API ---------------------------------------------------------------------


APPS = AppTable([App(id="1", key=KEY, secret=SECRET)])


class Recorder:
    """A backend that records triggers and knows no channels."""

    def __init__(self) -> None:
        self.triggers: list[tuple] = []

    def trigger(self, app, channels, event, data, socket_id):
        self.triggers.append((tuple(channels), event, data, socket_id))

    def channel_info(self, app, channel):
        return None

    def channels(self, app, users=False):
        return {}

    def users(self, app, channel):
        return []

    def terminate_user(self, app, user_id):
        pass


def http(method: str, path: str, body: bytes | str = b"", query: dict | None = None,
         backend: Recorder | None = None) -> Response:
    """Sign and handle one request; the answer always encodes."""
    body = body.encode("utf-8") if isinstance(body, str) else body
    signed = sign_request(method, path, query or {}, KEY, SECRET, body, timestamp=NOW)
    response = handle_request(method, path, urlencode(signed), body, APPS, backend or Recorder(), NOW)
    response.encoded()
    return response


def assert_400(response: Response) -> None:
    assert response.status == 400, response.body
    assert isinstance(response.body.get("error"), str)
    json.loads(response.encoded())


EVENT = {"name": "my-event", "channel": "news", "data": "x"}


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "evt\ud800"},
        {"name": "evt\x00"},
        {"data": "x\udfff"},
        {"data": {"nested": ["\ud800"]}},
        {"channel": "news\ud800"},
        {"channel": ..., "channels": ["news", "\udc00"]},
        {"socket_id": "1.2\ud800"},
        {"socket_id": "\u0661.\u0662"},  # Arabic-Indic digits are digits to \d, not to us
        {"socket_id": "1" * 30 + ".1"},
        {"extra": {"\ud800": "ignored fields are text too"}},
        {"data": float("nan")},
    ],
)
def test_a_trigger_with_a_bad_field_is_a_400_and_reaches_no_backend(fields):
    body = {k: v for k, v in {**EVENT, **fields}.items() if v is not ...}
    backend = Recorder()
    assert_400(http("POST", "/apps/1/events", raw(body), backend=backend))
    assert_400(http("POST", "/apps/1/batch_events", raw({"batch": [EVENT, body]}), backend=backend))
    assert backend.triggers == []


@pytest.mark.parametrize("body", [b'{"name":"e","channel":"c","data":"\xed\xa0\x80"}', b"\xff{}", b"[]", b""])
def test_a_body_that_is_not_a_utf8_json_object_is_a_400(body):
    assert_400(http("POST", "/apps/1/events", body))


def test_a_trigger_with_escaped_valid_unicode_is_delivered_unchanged():
    backend = Recorder()
    body = raw({"name": f"evt {PAIR}", "channel": "news", "data": f"é {PAIR}", "socket_id": "1.2"})
    assert http("POST", "/apps/1/events", body, backend=backend).status == 200
    assert backend.triggers == [(("news",), "evt \U0001f600", "é \U0001f600", "1.2")]


def test_a_path_or_query_with_a_lone_surrogate_is_a_400():
    assert_400(handle_request("GET", "/apps/1/channels/news\udcff", "", b"", APPS, Recorder(), NOW))
    assert_400(handle_request("GET", "/apps/1/channels", "info=\udcff", b"", APPS, Recorder(), NOW))


@pytest.mark.parametrize("query", [{"info": "user_count\x00"}, {"info": "%ED%A0%80"}, {"filter_by_prefix": "\x00\n"}])
def test_odd_query_values_answer_json_never_raise(query):
    response = http("GET", "/apps/1/channels", query=query)
    assert response.status in (200, 400)
    json.loads(response.encoded())
