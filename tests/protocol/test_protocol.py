"""The Pusher protocol core: client text in, typed messages or ProtocolError out;
server messages out as finished frames. No sockets."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from transport import protocol
from transport.errors import ProtocolError
from transport.frames import OP_TEXT, FrameDecoder
from transport.protocol import (
    ClientEvent,
    Ping,
    Pong,
    Signin,
    Subscribe,
    Unknown,
    Unsubscribe,
    check_connect_request,
    connection_established_frame,
    encode_data,
    error_frame,
    event_frame,
    new_socket_id,
    parse_client_message,
)

SOCKET_ID_RE = re.compile(r"^\d+\.\d+$")


def decode(frame: bytes) -> dict:
    """The JSON message inside one server frame."""
    [message] = FrameDecoder(require_mask=False).feed(frame)
    assert message.opcode == OP_TEXT
    return json.loads(message.text)


# --- parsing client messages ---------------------------------------------------


def test_ping_and_pong_parse_with_or_without_data():
    assert parse_client_message('{"event":"pusher:ping","data":{}}') == Ping()
    assert parse_client_message('{"event":"pusher:ping"}') == Ping()
    assert parse_client_message('{"event":"pusher:pong","data":{}}') == Pong()


def test_subscribe_parses_channel_auth_and_channel_data():
    text = json.dumps(
        {"event": "pusher:subscribe", "data": {"channel": "presence-x", "auth": "k:sig", "channel_data": '{"user_id":"1"}'}}
    )
    assert parse_client_message(text) == Subscribe("presence-x", "k:sig", '{"user_id":"1"}')


def test_subscribe_without_auth_leaves_it_none():
    assert parse_client_message('{"event":"pusher:subscribe","data":{"channel":"news"}}') == Subscribe("news")


def test_subscribe_data_may_be_a_json_encoded_string():
    text = json.dumps({"event": "pusher:subscribe", "data": json.dumps({"channel": "news"})})
    assert parse_client_message(text) == Subscribe("news")


def test_unsubscribe_parses_the_channel():
    assert parse_client_message('{"event":"pusher:unsubscribe","data":{"channel":"news"}}') == Unsubscribe("news")


def test_signin_parses_auth_and_user_data():
    text = json.dumps({"event": "pusher:signin", "data": {"auth": "k:sig", "user_data": '{"id":"u1"}'}})
    assert parse_client_message(text) == Signin("k:sig", '{"id":"u1"}')


@pytest.mark.parametrize("data", [{"x": 1}, "plain text", [1, 2], 3, None])
def test_client_event_keeps_event_channel_and_data_as_sent(data):
    text = json.dumps({"event": "client-typing", "channel": "private-chat", "data": data})
    assert parse_client_message(text) == ClientEvent("client-typing", "private-chat", data)


def test_client_event_without_data_has_none():
    assert parse_client_message('{"event":"client-x","channel":"private-c"}') == ClientEvent("client-x", "private-c", None)


@pytest.mark.parametrize("event", ["pusher:unknown", "something-else", "pusher_internal:subscription_succeeded", ""])
def test_unknown_events_parse_as_unknown(event):
    assert parse_client_message(json.dumps({"event": event, "data": {}})) == Unknown(event)


def test_bytes_are_accepted_as_input():
    assert parse_client_message(b'{"event":"pusher:ping"}') == Ping()


def test_unicode_channel_names_survive_parsing():
    text = json.dumps({"event": "pusher:subscribe", "data": {"channel": "naïve"}}, ensure_ascii=False)
    assert parse_client_message(text) == Subscribe("naïve")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{",
        '{"event": "pusher:ping",}',
        "\x00",
    ],
)
def test_invalid_json_is_a_protocol_error_without_code(text):
    with pytest.raises(ProtocolError) as info:
        parse_client_message(text)
    assert info.value.code is None
    assert not info.value.fatal
    assert "JSON" in info.value.message


@pytest.mark.parametrize("text", ["[]", '"pusher:ping"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_a_protocol_error(text):
    with pytest.raises(ProtocolError) as info:
        parse_client_message(text)
    assert info.value.code is None
    assert not info.value.fatal


@pytest.mark.parametrize("message", [{}, {"event": None}, {"event": 1}, {"event": ["pusher:ping"]}, {"data": {}}])
def test_event_must_be_a_string(message):
    with pytest.raises(ProtocolError, match="'event' must be a string"):
        parse_client_message(json.dumps(message))


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        ({"event": "pusher:subscribe"}, "'channel' must be a string"),
        ({"event": "pusher:subscribe", "data": {}}, "'channel' must be a string"),
        ({"event": "pusher:subscribe", "data": {"channel": 5}}, "'channel' must be a string"),
        ({"event": "pusher:subscribe", "data": {"channel": None}}, "'channel' must be a string"),
        ({"event": "pusher:subscribe", "data": {"channel": "c", "auth": 5}}, "'auth' must be a string"),
        ({"event": "pusher:subscribe", "data": {"channel": "c", "channel_data": {"user_id": 1}}}, "'channel_data'"),
        ({"event": "pusher:subscribe", "data": ["news"]}, "'data' must be a JSON object"),
        ({"event": "pusher:subscribe", "data": None}, "'data' must be a JSON object"),
        ({"event": "pusher:subscribe", "data": "{not json"}, "'data' is not valid JSON"),
        ({"event": "pusher:subscribe", "data": '"news"'}, "'data' must be a JSON object"),
        ({"event": "pusher:unsubscribe", "data": {}}, "'channel' must be a string"),
        ({"event": "pusher:signin", "data": {"auth": "a"}}, "'user_data' must be a string"),
        ({"event": "pusher:signin", "data": {"user_data": "{}"}}, "'auth' must be a string"),
        ({"event": "client-x", "data": {}}, "'channel' string"),
        ({"event": "client-x", "channel": 3}, "'channel' string"),
    ],
)
def test_wrong_field_types_are_protocol_errors_that_say_which_field(message, complaint):
    with pytest.raises(ProtocolError) as info:
        parse_client_message(json.dumps(message))
    assert complaint in info.value.message
    assert info.value.code is None
    assert not info.value.fatal


def test_parsed_messages_are_immutable():
    message = parse_client_message('{"event":"pusher:subscribe","data":{"channel":"news"}}')
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.channel = "other"


# --- the connect request -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/app/app-key", "protocol=7"),
        ("/app/app-key", "protocol=7&client=js&version=8.4.0&flash=false"),
        ("/app/app-key/", "client=js&protocol=7"),
    ],
)
def test_a_valid_connect_request_returns_the_app_key(path, query):
    assert check_connect_request(path, query) == "app-key"


@pytest.mark.parametrize(
    ("path", "query", "code"),
    [
        ("/", "protocol=7", 4005),
        ("/foo", "protocol=7", 4005),
        ("/app", "protocol=7", 4005),
        ("/app/", "protocol=7", 4005),
        ("/apps/app-key", "protocol=7", 4005),
        ("/app/app-key/extra", "protocol=7", 4005),
        ("/app/app-key", "", 4008),
        ("/app/app-key", None, 4008),
        ("/app/app-key", "client=js&version=8", 4008),
        ("/app/app-key", "protocol=", 4008),
        ("/app/app-key", "protocol=abc", 4006),
        ("/app/app-key", "protocol=7.0", 4006),
        ("/app/app-key", "protocol=6", 4007),
        ("/app/app-key", "protocol=8", 4007),
        ("/app/app-key", "protocol=-7", 4007),
    ],
)
def test_bad_connect_requests_are_fatal_errors_with_the_pusher_code(path, query, code):
    with pytest.raises(ProtocolError) as info:
        check_connect_request(path, query)
    assert info.value.code == code
    assert info.value.fatal
    assert info.value.message


def test_a_bad_path_is_reported_before_a_bad_protocol():
    with pytest.raises(ProtocolError) as info:
        check_connect_request("/nope", "protocol=abc")
    assert info.value.code == 4005


# --- server frames ---------------------------------------------------------------


def test_connection_established_carries_socket_id_and_activity_timeout_as_a_string():
    message = decode(connection_established_frame("123.456", 120))
    assert message["event"] == "pusher:connection_established"
    assert "channel" not in message
    assert isinstance(message["data"], str)
    assert json.loads(message["data"]) == {"socket_id": "123.456", "activity_timeout": 120}


def test_event_frame_sends_str_data_unchanged():
    message = decode(event_frame("news", "headline", '{"already":"encoded"}'))
    assert message == {"event": "headline", "channel": "news", "data": '{"already":"encoded"}'}


@pytest.mark.parametrize("data", [{"title": "hi", "n": [1, 2]}, [1, "a"], 5, 1.5, True, None])
def test_event_frame_json_encodes_other_data_once(data):
    message = decode(event_frame("news", "headline", data))
    assert isinstance(message["data"], str)
    assert json.loads(message["data"]) == data


def test_event_frame_without_channel_omits_it_and_user_id_is_added_when_given():
    assert "channel" not in decode(event_frame(None, "pusher:signin_success", {}))
    assert decode(event_frame("c", "e", "d", "user-1"))["user_id"] == "user-1"


def test_event_frame_keeps_unicode_and_slashes_unescaped():
    frame = event_frame("news", "e", {"url": "http://x/y", "name": "Zoë"})
    assert b"http://x/y" in frame
    assert "Zoë".encode() in frame


def test_error_frame_data_is_an_object_with_code_and_message():
    assert decode(error_frame(4001, "App key x does not exist")) == {
        "event": "pusher:error",
        "data": {"code": 4001, "message": "App key x does not exist"},
    }
    assert decode(error_frame(None, "bad"))["data"] == {"code": None, "message": "bad"}


def test_ping_and_pong_frames():
    assert decode(protocol.PING_FRAME) == {"event": "pusher:ping", "data": "{}"}
    assert decode(protocol.PONG_FRAME) == {"event": "pusher:pong", "data": "{}"}


def test_encode_data_passes_strings_and_encodes_the_rest():
    assert encode_data("x") == "x"
    assert encode_data({"a": 1}) == '{"a":1}'


def test_socket_ids_are_two_integers_joined_by_a_dot_and_differ():
    ids = {new_socket_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(SOCKET_ID_RE.match(socket_id) for socket_id in ids)


def test_the_codes_match_the_pusher_table():
    assert (protocol.APP_NOT_FOUND, protocol.PATH_NOT_FOUND, protocol.INVALID_VERSION) == (4001, 4005, 4006)
    assert (protocol.UNSUPPORTED_PROTOCOL, protocol.NO_PROTOCOL, protocol.OVER_CAPACITY) == (4007, 4008, 4100)
    assert (protocol.RECONNECT, protocol.PONG_NOT_RECEIVED) == (4200, 4201)
