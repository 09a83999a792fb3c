"""Channel, sign-in and webhook signatures, checked against the official pusher SDK."""

from __future__ import annotations

import base64
import dataclasses
import json
import time

import pusher
import pusher.signature
import pytest

from transport.auth import (
    DEFAULT_MAX_USER_INFO_BYTES,
    USER_INFO_TOO_LARGE_CODE,
    PresenceMember,
    SignedInUser,
    channel_auth_string,
    make_channel_auth,
    make_user_auth,
    parse_presence_channel_data,
    parse_user_data,
    sign,
    user_auth_string,
    verify_channel_auth,
    verify_user_auth,
    webhook_signature,
)
from transport.errors import AuthError, ProtocolError

KEY = "app-key"
SECRET = "app-secret"
SOCKET_ID = "1234.5678"


@pytest.fixture
def sdk():
    return pusher.Pusher(
        app_id="1",
        key=KEY,
        secret=SECRET,
        encryption_master_key_base64=base64.b64encode(b"m" * 32).decode(),
    )


# --- string building and signing -------------------------------------------


def test_sign_is_lowercase_hex_hmac_sha256():
    signature = sign("secret", "text")
    assert len(signature) == 64
    assert signature == signature.lower()
    assert signature == pusher.signature.sign("secret", "text")


def test_strings_to_sign_follow_the_documented_layouts():
    assert channel_auth_string("1.2", "private-a") == "1.2:private-a"
    data = '{"user_id":"1"}'
    assert channel_auth_string("1.2", "presence-a", data) == f"1.2:presence-a:{data}"
    assert user_auth_string("1.2", '{"id":"7"}') == '1.2::user::{"id":"7"}'


@pytest.mark.parametrize(
    ("channel", "channel_data", "signature"),
    [
        ("private-foobar", None,
         "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"),
        ("presence-foobar", '{"user_id":10,"user_info":{"name":"Mr. Channels"}}',
         "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"),
    ],
)
def test_channel_auth_matches_the_documented_examples(channel, channel_data, signature):
    # Examples from the Pusher Channels auth signature documentation.
    key, secret = "278d425bdf160c739803", "7ad3773142a6692b25b8"
    auth = make_channel_auth(key, secret, "1234.1234", channel, channel_data)
    assert auth == f"{key}:{signature}"


# --- compatibility with the SDK --------------------------------------------


def test_sdk_private_channel_auth_verifies(sdk):
    response = sdk.authenticate(channel="private-chat", socket_id=SOCKET_ID)
    verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-chat", response["auth"])


def test_sdk_private_encrypted_channel_auth_verifies(sdk):
    channel = "private-encrypted-vault"
    response = sdk.authenticate(channel=channel, socket_id=SOCKET_ID)
    assert "shared_secret" in response
    verify_channel_auth(KEY, SECRET, SOCKET_ID, channel, response["auth"])


@pytest.mark.parametrize(
    ("custom", "user_id"),
    [
        ({"user_id": "u-1", "user_info": {"name": "Ada", "tags": ["x/y"]}}, "u-1"),
        ({"user_id": 5}, "5"),  # numeric ids become strings
    ],
)
def test_sdk_presence_channel_auth_verifies_and_parses(sdk, custom, user_id):
    response = sdk.authenticate("presence-room", SOCKET_ID, custom_data=custom)
    channel_data = response["channel_data"]
    verify_channel_auth(KEY, SECRET, SOCKET_ID, "presence-room", response["auth"], channel_data)
    member = parse_presence_channel_data(channel_data)
    assert member == PresenceMember(user_id, custom.get("user_info"), channel_data)


def test_make_channel_auth_equals_the_sdk_auth(sdk):
    custom = {"user_id": "9"}
    response = sdk.authenticate("presence-a", SOCKET_ID, custom_data=custom)
    ours = make_channel_auth(KEY, SECRET, SOCKET_ID, "presence-a", response["channel_data"])
    assert ours == response["auth"]
    assert make_channel_auth(KEY, SECRET, SOCKET_ID, "private-a") == (
        sdk.authenticate("private-a", SOCKET_ID)["auth"]
    )


def test_sdk_user_auth_verifies_and_parses(sdk):
    user = {"id": "u-42", "user_info": {"name": "Ada"}, "watchlist": ["u-1", "u-2"]}
    response = sdk.authenticate_user(socket_id=SOCKET_ID, user_data=user)
    verify_user_auth(KEY, SECRET, SOCKET_ID, response["user_data"], response["auth"])
    parsed = parse_user_data(response["user_data"])
    assert parsed == SignedInUser(
        id="u-42",
        user_info={"name": "Ada"},
        watchlist=("u-1", "u-2"),
        raw=response["user_data"],
    )
    assert make_user_auth(KEY, SECRET, SOCKET_ID, response["user_data"]) == response["auth"]


def test_sdk_accepts_our_webhook_signature(sdk):
    body = json.dumps(
        {"time_ms": int(time.time() * 1000), "events": [{"name": "channel_occupied", "channel": "a"}]}
    )
    signature = webhook_signature(SECRET, body.encode("utf-8"))
    assert sdk.validate_webhook(KEY, signature, body) is not None


def test_webhook_signature_with_another_secret_is_refused_by_the_sdk(sdk):
    body = json.dumps({"time_ms": int(time.time() * 1000), "events": []})
    signature = webhook_signature("other-secret", body.encode("utf-8"))
    assert sdk.validate_webhook(KEY, signature, body) is None


# --- verification failures -------------------------------------------------


def _private_auth(**overrides):
    args = dict(key=KEY, secret=SECRET, socket_id=SOCKET_ID, channel="private-chat")
    args.update(overrides)
    return make_channel_auth(**args)


@pytest.mark.parametrize(
    "other", [{"secret": "x"}, {"socket_id": "1.1"}, {"channel": "private-other"}]
)
def test_auth_made_for_another_secret_socket_or_channel_is_rejected(other):
    with pytest.raises(AuthError, match="Invalid signature"):
        verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-chat", _private_auth(**other))


@pytest.mark.parametrize("sent_data", ['{"user_id":"2"}', None])
def test_presence_auth_with_tampered_or_missing_channel_data_is_rejected(sent_data):
    auth = make_channel_auth(KEY, SECRET, SOCKET_ID, "presence-a", '{"user_id":"1"}')
    with pytest.raises(AuthError, match="Invalid signature"):
        verify_channel_auth(KEY, SECRET, SOCKET_ID, "presence-a", auth, sent_data)


@pytest.mark.parametrize("auth", [None, "", 123, ["app-key:abc"], {"auth": "x"}])
def test_missing_or_non_string_auth_is_an_auth_error(auth):
    with pytest.raises(AuthError, match="Missing auth for channel 'private-chat'"):
        verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-chat", auth)


def test_auth_without_a_key_part_is_rejected():
    signature = _private_auth().split(":", 1)[1]
    with pytest.raises(AuthError, match="app_key:signature"):
        verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-chat", signature)


def test_auth_with_another_app_key_is_rejected_even_if_the_signature_matches():
    signature = _private_auth().split(":", 1)[1]
    with pytest.raises(AuthError, match="different app key"):
        verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-chat", f"other-key:{signature}")


def test_uppercase_hex_signature_is_rejected():
    key, signature = _private_auth().split(":", 1)
    with pytest.raises(AuthError):
        verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-chat", f"{key}:{signature.upper()}")


def test_non_ascii_signature_is_rejected_without_crashing():
    with pytest.raises(AuthError, match="Invalid signature"):
        verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-chat", f"{KEY}:\u00e9\u00e9")


def test_auth_error_explains_what_to_sign_but_not_the_expected_signature():
    expected = _private_auth().split(":", 1)[1]
    with pytest.raises(AuthError) as info:
        verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-chat", f"{KEY}:{'0' * 64}")
    message = info.value.message
    assert "HMAC SHA256 hex digest of '1234.5678:private-chat'" in message
    assert expected not in message
    assert SECRET not in message


def test_auth_error_quotes_long_channel_data_only_in_part():
    data = json.dumps({"user_id": "1", "user_info": {"bio": "x" * 5000}})
    with pytest.raises(AuthError) as info:
        verify_channel_auth(KEY, SECRET, SOCKET_ID, "presence-a", f"{KEY}:{'0' * 64}", data)
    assert len(info.value.message) < 500


def test_auth_error_is_a_protocol_error_with_code_4009_and_status_401():
    with pytest.raises(ProtocolError) as info:
        verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-chat", None)
    assert isinstance(info.value, AuthError)
    assert info.value.code == 4009
    assert info.value.status == 401


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        (None, "Missing auth for sign-in"),
        (make_user_auth(KEY, SECRET, SOCKET_ID, '{"id":"2"}'), "Invalid signature"),
        (make_user_auth("other-key", SECRET, SOCKET_ID, '{"id":"1"}'), "different app key"),
    ],
)
def test_user_auth_that_is_missing_tampered_or_for_another_key_is_rejected(auth, reason):
    with pytest.raises(AuthError, match=reason):
        verify_user_auth(KEY, SECRET, SOCKET_ID, '{"id":"1"}', auth)


def test_channel_auth_cannot_be_replayed_as_user_auth():
    data = '{"id":"1"}'
    channel_auth = make_channel_auth(KEY, SECRET, SOCKET_ID, "private-x", data)
    with pytest.raises(AuthError):
        verify_user_auth(KEY, SECRET, SOCKET_ID, data, channel_auth)


# --- presence channel_data -------------------------------------------------


@pytest.mark.parametrize(
    ("user_id_json", "expected"),
    [
        ('"abc"', "abc"),
        ("5", "5"),
        ("-3", "-3"),
        ("5.0", "5"),
        ("1.5", "1.5"),
        ("12345678901234567890", "12345678901234567890"),
    ],
)
def test_user_id_becomes_a_string_the_way_sdks_print_it(user_id_json, expected):
    member = parse_presence_channel_data(f'{{"user_id":{user_id_json}}}')
    assert member.user_id == expected


@pytest.mark.parametrize(
    "user_id_json", ['""', "true", "false", "null", "[1]", '{"a":1}']
)
def test_user_id_that_is_not_a_string_or_number_is_rejected(user_id_json):
    with pytest.raises(ProtocolError, match="user_id") as info:
        parse_presence_channel_data(f'{{"user_id":{user_id_json}}}')
    assert info.value.code is None


def test_missing_user_id_is_rejected():
    with pytest.raises(ProtocolError, match="must contain a user_id"):
        parse_presence_channel_data('{"user_info":{}}')


def test_user_info_is_optional_and_raw_keeps_the_signed_text():
    raw = '{ "user_id" : "1" }'
    member = parse_presence_channel_data(raw)
    assert member == PresenceMember(user_id="1", user_info=None, raw=raw)


@pytest.mark.parametrize("user_info", [{"name": "Ada"}, ["a"], "text", 3, True])
def test_user_info_may_be_any_json_value(user_info):
    member = parse_presence_channel_data(json.dumps({"user_id": "1", "user_info": user_info}))
    assert member.user_info == user_info


def _info_of_size(size: int) -> dict:
    # {"n":"..."} is 8 bytes of JSON plus the string.
    return {"n": "x" * (size - 8)}


def test_user_info_at_the_limit_is_accepted():
    info = _info_of_size(DEFAULT_MAX_USER_INFO_BYTES)
    assert len(json.dumps(info, separators=(",", ":"))) == DEFAULT_MAX_USER_INFO_BYTES
    parse_presence_channel_data(json.dumps({"user_id": "1", "user_info": info}))


def test_user_info_over_the_limit_is_rejected_with_code_4303():
    info = _info_of_size(DEFAULT_MAX_USER_INFO_BYTES + 1)
    with pytest.raises(ProtocolError) as error:
        parse_presence_channel_data(json.dumps({"user_id": "1", "user_info": info}))
    assert error.value.code == USER_INFO_TOO_LARGE_CODE == 4303
    assert "2049 bytes" in error.value.message and "2048" in error.value.message


def test_user_info_limit_counts_utf8_bytes_not_characters():
    # 1000 two-byte characters: 1008 characters but 2008 bytes of JSON.
    info = {"n": "\u00e9" * 1000}
    data = json.dumps({"user_id": "1", "user_info": info}, ensure_ascii=False)
    parse_presence_channel_data(data, max_user_info_bytes=2008)
    with pytest.raises(ProtocolError) as error:
        parse_presence_channel_data(data, max_user_info_bytes=2007)
    assert error.value.code == USER_INFO_TOO_LARGE_CODE


def test_missing_channel_data_tells_how_to_send_it():
    with pytest.raises(ProtocolError, match="Presence channels need channel_data") as info:
        parse_presence_channel_data(None)
    assert info.value.code is None


@pytest.mark.parametrize("channel_data", [{"user_id": "1"}, 5, b'{"user_id":"1"}'])
def test_channel_data_must_be_a_json_string_not_an_object(channel_data):
    with pytest.raises(ProtocolError, match="must be a string holding JSON"):
        parse_presence_channel_data(channel_data)


@pytest.mark.parametrize("channel_data", ["", "{", "user_id=1", '{"user_id":"1"}x'])
def test_channel_data_that_is_not_json_is_rejected(channel_data):
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_presence_channel_data(channel_data)


@pytest.mark.parametrize("channel_data", ['["1"]', '"1"', "1", "null"])
def test_channel_data_must_be_a_json_object(channel_data):
    with pytest.raises(ProtocolError, match="must be a JSON object"):
        parse_presence_channel_data(channel_data)


@pytest.mark.parametrize(
    "channel_data",
    ['{"user_id":"1","user_info":{"a":NaN}}', '{"user_id":"1","user_info":[1e400]}',
     '{"user_id":NaN}', '{"user_id":1e400}', '{"user_id":"\\ud800"}'],
)
def test_channel_data_that_cannot_be_sent_on_as_json_is_rejected(channel_data):
    # Other clients JSON.parse member_added; NaN or lone surrogates would break them.
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_presence_channel_data(channel_data)


# --- sign-in user_data -----------------------------------------------------


def test_minimal_user_data_has_no_info_and_an_empty_watchlist():
    user = parse_user_data('{"id":"1"}')
    assert user == SignedInUser(id="1", user_info=None, watchlist=(), raw='{"id":"1"}')


@pytest.mark.parametrize("user_id", ['""', "1", "null", "true", '["1"]', '{"a":1}'])
def test_user_data_id_must_be_a_non_empty_string(user_id):
    with pytest.raises(ProtocolError, match="non-empty string id") as info:
        parse_user_data(f'{{"id":{user_id}}}')
    assert info.value.code is None


def test_user_data_without_id_is_rejected():
    with pytest.raises(ProtocolError, match="non-empty string id"):
        parse_user_data('{"user_info":{}}')


@pytest.mark.parametrize("watchlist", ['"u-1"', '{"u":1}', "[1]", '[""]', '["a",null]'])
def test_watchlist_must_be_a_list_of_user_id_strings(watchlist):
    with pytest.raises(ProtocolError, match="watchlist"):
        parse_user_data(f'{{"id":"1","watchlist":{watchlist}}}')


def test_null_watchlist_counts_as_empty():
    assert parse_user_data('{"id":"1","watchlist":null}').watchlist == ()


@pytest.mark.parametrize(
    ("user_data", "message"),
    [
        (None, "pusher:signin needs user_data"),
        ("{", "not valid JSON"),
        ("[]", "JSON object"),
        ({"id": "1"}, "string holding JSON"),
    ],
)
def test_missing_or_malformed_user_data_is_rejected_with_a_reason(user_data, message):
    with pytest.raises(ProtocolError, match=message):
        parse_user_data(user_data)


def test_parsed_members_and_users_are_immutable():
    member = parse_presence_channel_data('{"user_id":"1"}')
    user = parse_user_data('{"id":"1","watchlist":["2"]}')
    with pytest.raises(dataclasses.FrozenInstanceError):
        member.user_id = "2"
    with pytest.raises(dataclasses.FrozenInstanceError):
        user.id = "2"
    assert isinstance(user.watchlist, tuple)
