"""Channel and event name rules, checked against the official pusher SDK."""

from __future__ import annotations

import json

import pusher
import pusher.util
import pytest

from transport.errors import ProtocolError
from transport.names import (
    CACHE_PREFIXES,
    INVALID_NAME_CODE,
    ChannelKind,
    channel_kind,
    is_cache_channel,
    is_client_event,
    server_to_user_channel,
    user_id_from_server_to_user,
    validate_channel_name,
    validate_event_name,
)

ALL_ALLOWED_CHARS = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-=@,.;"
)


def test_invalid_name_code_is_4302_in_the_other_errors_range():
    assert INVALID_NAME_CODE == 4302


# --- channel_kind ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("my-channel", ChannelKind.PUBLIC),
        ("private-chat", ChannelKind.PRIVATE),
        ("presence-room", ChannelKind.PRESENCE),
        ("private-encrypted-vault", ChannelKind.PRIVATE_ENCRYPTED),
        ("private-encrypted-cache-x", ChannelKind.PRIVATE_ENCRYPTED),
        ("private-cache-x", ChannelKind.PRIVATE),
        ("presence-cache-x", ChannelKind.PRESENCE),
        ("cache-x", ChannelKind.PUBLIC),
    ],
)
def test_channel_kind_follows_the_name_prefix(name, kind):
    assert channel_kind(name) is kind


@pytest.mark.parametrize(
    "name",
    [
        "Private-chat",  # prefixes are case-sensitive
        "my-private-chat",  # prefix, not substring
        "presence",  # no dash: not the prefix
        "private",
        "xpresence-room",
    ],
)
def test_channel_kind_is_public_without_an_exact_prefix(name):
    assert channel_kind(name) is ChannelKind.PUBLIC


def test_private_encrypted_prefix_wins_over_private():
    assert channel_kind("private-encrypted-a") is ChannelKind.PRIVATE_ENCRYPTED
    # Without the trailing dash it is only an ordinary private channel.
    assert channel_kind("private-encrypteda") is ChannelKind.PRIVATE


def test_only_public_channels_need_no_auth():
    assert not ChannelKind.PUBLIC.needs_auth
    assert ChannelKind.PRIVATE.needs_auth
    assert ChannelKind.PRESENCE.needs_auth
    assert ChannelKind.PRIVATE_ENCRYPTED.needs_auth


# --- is_cache_channel ------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["cache-a", "private-cache-a", "presence-cache-a", "private-encrypted-cache-a"],
)
def test_cache_prefixes_make_cache_channels(name):
    assert is_cache_channel(name)


@pytest.mark.parametrize(
    "name",
    [
        "my-cache-channel",  # substring, not prefix
        "presence-room-cache-x",
        "private-foo-cache-",
        "cache",
        "cachex-a",
        "Cache-a",
        "private-encrypted-a",
        "public",
    ],
)
def test_cache_is_matched_by_exact_prefix_not_substring(name):
    assert not is_cache_channel(name)


def test_cache_prefixes_are_the_four_documented_ones():
    assert set(CACHE_PREFIXES) == {
        "cache-",
        "private-cache-",
        "presence-cache-",
        "private-encrypted-cache-",
    }


# --- validate_channel_name -------------------------------------------------


def test_every_documented_character_is_allowed_and_the_name_is_returned():
    assert validate_channel_name(ALL_ALLOWED_CHARS) == ALL_ALLOWED_CHARS


def test_channel_name_of_exactly_200_chars_is_valid():
    name = "a" * 200
    assert validate_channel_name(name) == name


def test_channel_name_over_200_chars_is_rejected_with_the_limit_in_the_message():
    with pytest.raises(ProtocolError) as info:
        validate_channel_name("a" * 201)
    assert info.value.code == INVALID_NAME_CODE
    assert "201" in info.value.message and "200" in info.value.message


def test_channel_name_limit_is_configurable():
    assert validate_channel_name("abcde", max_length=5) == "abcde"
    with pytest.raises(ProtocolError, match="limit is 5"):
        validate_channel_name("abcdef", max_length=5)


def test_long_channel_names_are_shortened_in_the_message():
    with pytest.raises(ProtocolError) as info:
        validate_channel_name("b" * 5000)
    assert len(info.value.message) < 200


def test_empty_channel_name_is_rejected():
    with pytest.raises(ProtocolError, match="must not be empty") as info:
        validate_channel_name("")
    assert info.value.code == INVALID_NAME_CODE


@pytest.mark.parametrize("name", [None, 5, b"bytes-name", ["a"], {"a": 1}])
def test_channel_name_must_be_a_string(name):
    with pytest.raises(ProtocolError, match="must be a string") as info:
        validate_channel_name(name)
    assert info.value.code == INVALID_NAME_CODE


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("my channel", " "),
        ("a/b", "/"),
        ("a:b", ":"),
        ("a*b", "*"),
        ("a%20b", "%"),
        ("caf\u00e9", "\u00e9"),
        ("abc\n", "\n"),  # a trailing newline must not slip past the regex
        ("a\u0660", "\u0660"),  # non-ASCII digit
        ("a#b", "#"),
    ],
)
def test_channel_name_with_a_character_outside_the_alphabet_is_rejected(name, bad):
    with pytest.raises(ProtocolError) as info:
        validate_channel_name(name)
    assert info.value.code == INVALID_NAME_CODE
    assert repr(bad) in info.value.message
    assert "A-Z, a-z, 0-9" in info.value.message


def test_invalid_name_errors_do_not_close_the_connection():
    with pytest.raises(ProtocolError) as info:
        validate_channel_name("bad name")
    assert not info.value.fatal


def test_server_to_user_channel_is_reserved_by_default():
    with pytest.raises(ProtocolError, match="reserved") as info:
        validate_channel_name("#server-to-user-42")
    assert info.value.code == INVALID_NAME_CODE


def test_server_to_user_channel_is_allowed_when_asked():
    name = "#server-to-user-user@example.com"
    assert validate_channel_name(name, allow_server_to_user=True) == name


def test_server_to_user_channel_needs_a_user_id():
    with pytest.raises(ProtocolError, match="needs a user id"):
        validate_channel_name("#server-to-user-", allow_server_to_user=True)


def test_server_to_user_user_id_uses_the_channel_alphabet():
    with pytest.raises(ProtocolError, match="Invalid user id"):
        validate_channel_name("#server-to-user-a b", allow_server_to_user=True)


def test_server_to_user_length_counts_the_whole_name():
    name = "#server-to-user-" + "u" * (200 - len("#server-to-user-"))
    assert validate_channel_name(name, allow_server_to_user=True) == name
    with pytest.raises(ProtocolError, match="limit is 200"):
        validate_channel_name(name + "u", allow_server_to_user=True)


def test_other_hash_names_stay_invalid_even_with_server_to_user_allowed():
    with pytest.raises(ProtocolError):
        validate_channel_name("#server-to-all", allow_server_to_user=True)


@pytest.mark.parametrize(
    "name",
    [
        "private-chat",
        ALL_ALLOWED_CHARS,
        "a" * 200,
        "a" * 201,
        "",
        "my channel",
        "caf\u00e9",
        "abc\n",
        "#server-to-user-42",
        "#server-to-user-",
        "#server-to-user-a b",
        "#other",
    ],
)
def test_channel_name_rules_agree_with_the_official_sdk(name):
    # The SDK accepts server-to-user names (it sends to them), so compare
    # against our HTTP-side setting.
    try:
        pusher.util.validate_channel(name)
        sdk_ok = True
    except ValueError:
        sdk_ok = False
    try:
        validate_channel_name(name, allow_server_to_user=True)
        ours_ok = True
    except ProtocolError:
        ours_ok = False
    assert ours_ok == sdk_ok


# --- events ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["my-event", "client-typing", "pusher:ping", "with spaces", "e" * 200]
)
def test_event_names_only_have_a_length_rule(name):
    assert validate_event_name(name) == name


def test_event_name_over_the_limit_is_rejected():
    with pytest.raises(ProtocolError, match="limit is 200") as info:
        validate_event_name("e" * 201)
    assert info.value.code == INVALID_NAME_CODE


def test_event_name_limit_is_configurable():
    with pytest.raises(ProtocolError, match="limit is 3"):
        validate_event_name("abcd", max_length=3)


def test_empty_event_name_is_rejected():
    with pytest.raises(ProtocolError, match="must not be empty") as info:
        validate_event_name("")
    assert info.value.code == INVALID_NAME_CODE


@pytest.mark.parametrize("name", [None, 1, b"client-x"])
def test_event_name_must_be_a_string(name):
    with pytest.raises(ProtocolError, match="must be a string") as info:
        validate_event_name(name)
    assert info.value.code == INVALID_NAME_CODE


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("client-typing", True),
        ("client-", True),
        ("Client-typing", False),
        ("my-client-event", False),
        ("pusher:ping", False),
    ],
)
def test_client_events_start_with_client_dash(name, expected):
    assert is_client_event(name) is expected


# --- server-to-user --------------------------------------------------------


def test_server_to_user_channel_round_trips_the_user_id():
    channel = server_to_user_channel("42")
    assert channel == "#server-to-user-42"
    assert user_id_from_server_to_user(channel) == "42"


@pytest.mark.parametrize(
    "channel", ["private-42", "#server-to-user-", "server-to-user-42", "x#server-to-user-1"]
)
def test_user_id_from_server_to_user_is_none_for_other_channels(channel):
    assert user_id_from_server_to_user(channel) is None


@pytest.mark.parametrize("user_id", ["", None, 42])
def test_server_to_user_channel_needs_a_non_empty_string_id(user_id):
    with pytest.raises(ValueError):
        server_to_user_channel(user_id)


def test_server_to_user_channel_matches_the_sdk_send_to_user_target():
    sent = []

    class Capture:
        def __init__(self, client, **options):
            pass

        def send_request(self, request):
            sent.append(request)
            return {}

    client = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", backend=Capture)
    client.send_to_user("user-7", "hello", {"a": 1})
    assert json.loads(sent[0].body)["channels"] == [server_to_user_channel("user-7")]
