"""App configuration: validation, config files and environment overrides. Pure data."""

from __future__ import annotations

import dataclasses
import json

import pytest

from transport.config import App, AppTable, apps_from_env, load_apps
from transport.errors import ActorcastError, ConfigError


def test_the_default_app_is_the_zero_config_app_with_pusher_limits():
    app = App()
    assert (app.id, app.key, app.secret) == ("1", "app-key", "app-secret")
    assert app.enabled and app.enable_client_messages
    assert app.activity_timeout == 120
    assert app.pong_timeout == 30
    assert app.max_event_bytes == 10 * 1024
    assert app.max_channel_name_length == 200
    assert app.max_presence_members == 100


def test_app_id_is_stored_as_a_string():
    assert App(id=42).id == "42"


def test_apps_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        App().key = "other"


@pytest.mark.parametrize("field", ["key", "secret"])
@pytest.mark.parametrize("value", ["", None, 5])
def test_key_and_secret_must_be_non_empty_strings(field, value):
    with pytest.raises(ConfigError, match=f"'{field}' must be a non-empty string"):
        App(**{field: value})


@pytest.mark.parametrize("value", [0, -1, "10", 1.5])
def test_max_limits_must_be_positive_integers(value):
    with pytest.raises(ConfigError, match="'max_event_bytes' must be a positive integer"):
        App(max_event_bytes=value)


def test_max_connections_may_be_none_for_unlimited():
    assert App(max_connections=None).max_connections is None
    assert App(max_connections=5).max_connections == 5


def test_config_errors_are_actorcast_errors():
    assert issubclass(ConfigError, ActorcastError)


@pytest.mark.parametrize("field", ["activity_timeout", "pong_timeout"])
def test_timeouts_must_be_positive(field):
    with pytest.raises(ConfigError, match=field):
        App(**{field: 0})


# --- from_dict / load_apps -----------------------------------------------------


def test_from_dict_builds_an_app():
    app = App.from_dict({"id": "7", "key": "k", "secret": "s", "max_connections": 3})
    assert app == App(id="7", key="k", secret="s", max_connections=3)


def test_from_dict_rejects_unknown_settings_and_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        App.from_dict({"id": "1", "key": "k", "secret": "s", "max_conections": 5})
    assert "max_conections" in str(info.value)
    assert "max_connections" in str(info.value)


def test_from_dict_rejects_a_non_object():
    with pytest.raises(ConfigError, match="JSON object"):
        App.from_dict(["id", "1"])


def test_load_apps_reads_the_apps_list():
    text = json.dumps({"apps": [{"id": "1", "key": "k1", "secret": "s1"}, {"id": "2", "key": "k2", "secret": "s2"}]})
    apps = load_apps(text)
    assert [(a.id, a.key, a.secret) for a in apps] == [("1", "k1", "s1"), ("2", "k2", "s2")]


def test_load_apps_accepts_a_bare_list():
    assert load_apps('[{"id": 3, "key": "k", "secret": "s"}]') == [App(id="3", key="k", secret="s")]


def test_load_apps_keeps_limits_from_the_file():
    [app] = load_apps('{"apps": [{"key": "k", "secret": "s", "max_presence_members": 50, "enable_client_messages": false}]}')
    assert app.max_presence_members == 50
    assert app.enable_client_messages is False


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("{}", "at least one app"),
        ('{"apps": []}', "at least one app"),
        ('{"apps": {"id": "1"}}', "at least one app"),
        ("[]", "at least one app"),
        ("42", "at least one app"),
        ('{"apps": [1]}', "JSON object"),
        ('{"apps": [{"key": "k", "secret": "s", "colour": "red"}]}', "unknown app setting"),
        ('{"apps": [{"key": "", "secret": "s"}]}', "'key' must be a non-empty string"),
        ('{"apps": [{"key": "k", "secret": "s", "max_event_bytes": -1}]}', "'max_event_bytes'"),
    ],
)
def test_load_apps_errors_say_what_is_wrong(text, complaint):
    with pytest.raises(ConfigError) as info:
        load_apps(text)
    assert complaint in str(info.value)


# --- AppTable ------------------------------------------------------------------


def test_app_table_looks_apps_up_by_id_and_key():
    one, two = App(id="1", key="k1"), App(id="2", key="k2")
    table = AppTable([one, two])
    assert table.by_id("1") is one
    assert table.by_id(2) is two
    assert table.by_key("k2") is two
    assert table.by_id("3") is None
    assert table.by_key("nope") is None
    assert list(table) == [one, two]
    assert len(table) == 2


def test_app_table_rejects_duplicate_ids_and_keys_and_an_empty_list():
    with pytest.raises(ConfigError, match="duplicate app id"):
        AppTable([App(id="1", key="a"), App(id="1", key="b")])
    with pytest.raises(ConfigError, match="duplicate app key"):
        AppTable([App(id="1", key="a"), App(id="2", key="a")])
    with pytest.raises(ConfigError, match="at least one app"):
        AppTable([])


# --- environment overrides -----------------------------------------------------


def test_env_overrides_id_key_and_secret():
    env = {"ACTORCAST_APP_ID": "9", "ACTORCAST_APP_KEY": "env-key", "ACTORCAST_APP_SECRET": "env-secret"}
    app = apps_from_env(env)
    assert (app.id, app.key, app.secret) == ("9", "env-key", "env-secret")


def test_env_overrides_only_what_is_set_and_keeps_the_base_limits():
    base = App(activity_timeout=30, max_connections=10)
    app = apps_from_env({"ACTORCAST_APP_KEY": "env-key", "ACTORCAST_APP_SECRET": ""}, base)
    assert app == dataclasses.replace(base, key="env-key")


def test_no_env_gives_the_base_app_unchanged():
    base = App(id="5", key="k", secret="s")
    assert apps_from_env({}, base) is base
    assert apps_from_env({"PATH": "/bin"}) == App()
