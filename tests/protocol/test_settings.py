"""Node settings from flags, the config file and the environment: precedence, strict checks, soketi's names.

Pure: ``transport.settings.resolve`` on dicts and files in tmp_path, no node.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

from transport import soketi
from transport.config import APP_RULES, LIMIT_RULES, App, ServerLimits, load_apps
from transport.errors import ConfigError
from transport.settings import NODE_RULES, NodeSettings, SettingsError, resolve

README = Path(__file__).resolve().parents[2] / "README.md"


def problems(flags=None, env=None) -> list[str]:
    with pytest.raises(SettingsError) as info:
        resolve(flags or {}, env or {})
    assert str(info.value) == "\n".join(info.value.problems)
    return list(info.value.problems)


def write(tmp_path, data, name="apps.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


# --- defaults and precedence -----------------------------------------------------


def test_nothing_given_is_the_zero_config_node():
    settings, warnings = resolve({}, {})
    assert settings == NodeSettings()
    assert settings.apps == (App(),) and settings.port == 6001 and settings.metrics_port == 9601
    assert settings.limits == ServerLimits() and warnings == []


def test_a_flag_beats_the_file_which_beats_the_environment(tmp_path):
    config = write(tmp_path, {"port": 7002, "host": "127.0.0.2"})
    env = {"ACTORCAST_PORT": "7003", "ACTORCAST_HOST": "127.0.0.3", "ACTORCAST_SHUTDOWN_GRACE": "9"}
    settings, _ = resolve({"config": config, "port": "7001"}, env)
    assert (settings.port, settings.host, settings.shutdown_grace) == (7001, "127.0.0.2", 9.0)


def test_the_config_file_can_come_from_the_environment(tmp_path):
    config = write(tmp_path, {"port": 7002})
    assert resolve({}, {"ACTORCAST_CONFIG": config})[0].port == 7002
    other = write(tmp_path, {"port": 7004}, "other.json")
    assert resolve({"config": other}, {"ACTORCAST_CONFIG": config})[0].port == 7004


def test_every_node_setting_comes_from_a_flag_the_file_and_the_environment(tmp_path):
    cert = write(tmp_path, "pem", "cert.pem")
    texts = {"host": "127.0.0.1", "port": "7001", "metrics_host": "127.0.0.9", "metrics_port": "7002",
             "workers": "3", "adapter": "redis://10.0.0.1:6379/0", "log_level": "warning", "log_format": "json",
             "tls_cert": cert, "tls_key": cert, "metrics_tls": "true", "header_timeout": "1.5",
             "body_timeout": "2", "idle_timeout": "3", "send_timeout": "4", "max_head_bytes": "5000",
             "max_headers": "6", "max_body_bytes": "7000", "shutdown_grace": "8", "heartbeat_interval": "0.25",
             "request_timeout": "0.75", "max_log_lines_per_client": "9", "log_window": "2.5"}
    assert set(texts) == set(NODE_RULES)
    values = {"host": "127.0.0.1", "port": 7001, "metrics_host": "127.0.0.9", "metrics_port": 7002, "workers": 3,
              "adapter": "redis://10.0.0.1:6379/0", "log_level": "WARNING", "log_format": "json",
              "tls_cert": cert, "tls_key": cert, "metrics_tls": True, "header_timeout": 1.5, "body_timeout": 2,
              "idle_timeout": 3, "send_timeout": 4, "max_head_bytes": 5000, "max_headers": 6,
              "max_body_bytes": 7000, "shutdown_grace": 8, "heartbeat_interval": 0.25, "request_timeout": 0.75,
              "max_log_lines_per_client": 9, "log_window": 2.5}
    from_env = resolve({}, {f"ACTORCAST_{name.upper()}": text for name, text in texts.items()})[0]
    flags = {**texts, "metrics_tls": True}  # a switch flag carries no value
    from_flags = resolve(flags, {})[0]
    file_values = {**values, "log_level": "warning"}
    from_file = resolve({"config": write(tmp_path, file_values)}, {})[0]
    for settings in (from_env, from_flags, from_file):
        assert {name: getattr(settings, name) for name in values} == values


def test_metrics_port_minus_one_or_null_turns_metrics_off(tmp_path):
    assert resolve({"metrics_port": "-1"}, {})[0].metrics_port is None
    assert resolve({}, {"ACTORCAST_METRICS_PORT": "-1"})[0].metrics_port is None
    assert resolve({"config": write(tmp_path, {"metrics_port": None})}, {})[0].metrics_port is None


def test_workers_auto_is_one_per_usable_core():
    cores = len(os.sched_getaffinity(0))
    assert resolve({"workers": "auto"}, {})[0].workers == cores
    assert resolve({}, {"ACTORCAST_WORKERS": "AUTO"})[0].workers == cores


def test_adapter_local_means_none():
    assert resolve({"adapter": "local"}, {})[0].adapter is None


def test_empty_variables_are_unset():
    assert resolve({}, {"ACTORCAST_PORT": "", "ACTORCAST_APP_SECRET": ""})[0] == NodeSettings()


def test_node_kwargs_pass_tls_only_when_set(tmp_path):
    plain = resolve({}, {})[0].node_kwargs()
    assert not {"tls_cert", "tls_key", "metrics_tls"} & set(plain)
    assert plain["metrics_port"] == 9601 and plain["limits"] == ServerLimits()
    pem = write(tmp_path, "pem", "x.pem")
    tls = resolve({"tls_cert": pem, "tls_key": pem}, {})[0].node_kwargs()
    assert (tls["tls_cert"], tls["tls_key"]) == (pem, pem) and "metrics_tls" not in tls


# --- the apps --------------------------------------------------------------------


def test_the_default_app_takes_every_app_setting_from_the_environment():
    texts = {"id": "9", "key": "k", "secret": "s", "enabled": "false", "enable_client_messages": "0",
             "enable_subscription_count": "1", "max_connections": "5", "max_event_bytes": "100",
             "max_channels_per_event": "3", "max_batch_events": "4", "max_presence_members": "5",
             "max_user_info_bytes": "60", "max_channel_name_length": "70", "max_event_name_length": "80",
             "client_events_per_second": "2.5", "activity_timeout": "60", "pong_timeout": "15",
             "max_message_bytes": "1000", "max_buffer_bytes": "2000",
             "webhooks": '[{"url": "http://127.0.0.1:9/hook", "event_types": ["channel_occupied"]}]',
             "webhook_batching": "true", "webhook_batch_ms": "20", "webhook_delay_seconds": "0"}
    assert set(texts) == set(APP_RULES)
    settings, _ = resolve({}, {f"ACTORCAST_APP_{name.upper()}": text for name, text in texts.items()})
    (app,) = settings.apps
    assert (app.id, app.key, app.secret, app.enabled, app.enable_client_messages) == ("9", "k", "s", False, False)
    assert app.enable_subscription_count and app.max_connections == 5 and app.client_events_per_second == 2.5
    assert (app.max_presence_members, app.activity_timeout, app.pong_timeout) == (5, 60, 15)
    assert [hook.url for hook in app.webhooks] == ["http://127.0.0.1:9/hook"]
    assert app.webhook_batching and app.webhook_batch_ms == 20 and app.webhook_delay_seconds == 0


def test_the_file_s_apps_replace_the_default_app_and_the_environment_s(tmp_path):
    config = write(tmp_path, {"apps": [{"id": "7", "key": "k7", "secret": "s7", "enabled": False}]})
    settings, warnings = resolve({"config": config}, {"ACTORCAST_APP_KEY": "env-key", "SOKETI_DEFAULT_APP_ID": "3"})
    assert [(a.id, a.key, a.enabled) for a in settings.apps] == [("7", "k7", False)]
    assert warnings == [f"ACTORCAST_APP_KEY, SOKETI_DEFAULT_APP_ID ignored: the config file {config} lists the apps"]


def test_a_file_without_apps_keeps_the_environment_s_default_app(tmp_path):
    env = {"ACTORCAST_APP_KEY": "env-key", "ACTORCAST_APP_SECRET": "env-secret"}
    settings, _ = resolve({"config": write(tmp_path, {"port": 7000})}, env)
    assert settings.port == 7000 and settings.apps[0].key == "env-key"


def test_a_bare_list_of_apps_is_still_a_config_file(tmp_path):
    settings, _ = resolve({"config": write(tmp_path, [{"id": 3, "key": "k", "secret": "s"}])}, {})
    assert settings.apps == (App(id="3", key="k", secret="s"),)


# --- every mistake, named, with what is allowed ---------------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "line"),
    [
        ({"port": "99999"}, {}, '--port must be an integer from 0 to 65535, not "99999"'),
        ({"port": "abc"}, {}, '--port must be an integer from 0 to 65535, not "abc"'),
        ({}, {"ACTORCAST_PORT": "abc"}, 'ACTORCAST_PORT must be an integer from 0 to 65535, not "abc"'),
        ({"log_level": "verbose"}, {},
         '--log-level must be one of debug, info, warning, error, critical, not "verbose"'),
        ({"log_format": "xml"}, {}, '--log-format must be one of text, json, not "xml"'),
        ({"metrics_port": "-2"}, {}, '--metrics-port must be an integer from 0 to 65535, or -1 (off), not "-2"'),
        ({"workers": "lots"}, {}, "--workers must be a positive number or 'auto', not \"lots\""),
        ({"workers": "0"}, {}, "--workers must be a positive number or 'auto', not \"0\""),
        ({"shutdown_grace": "-1"}, {}, '--shutdown-grace must be a positive number, not "-1"'),
        ({"header_timeout": "nan"}, {}, '--header-timeout must be a positive number, not "nan"'),
        ({"max_body_bytes": "1.5"}, {}, '--max-body-bytes must be a positive integer, not "1.5"'),
        ({"adapter": "nats://x"}, {}, "--adapter must be redis://"),
        ({}, {"ACTORCAST_METRICS_TLS": "yes"}, 'ACTORCAST_METRICS_TLS must be true, false, 1 or 0, not "yes"'),
        ({}, {"ACTORCAST_APP_ENABLED": "no"}, 'ACTORCAST_APP_ENABLED must be true, false, 1 or 0, not "no"'),
        ({}, {"ACTORCAST_APP_MAX_CONNECTIONS": "0"}, 'ACTORCAST_APP_MAX_CONNECTIONS must be a positive integer'),
        ({}, {"ACTORCAST_APP_MAX_CONECTIONS": "5"}, "ACTORCAST_APP_MAX_CONECTIONS: unknown app setting; known: "),
        ({}, {"ACTORCAST_APP_WEBHOOKS": "[{"}, 'ACTORCAST_APP_WEBHOOKS must be a JSON list of {"url": ...} objects'),
        ({}, {"ACTORCAST_APP_WEBHOOKS": '[{"url": "ftp://x"}]'},
         "ACTORCAST_APP_WEBHOOKS[0].url: must start with http:// or https://"),
    ],
)
def test_a_bad_flag_or_variable_is_one_line_naming_it_and_what_is_allowed(flags, env, line):
    (problem,) = problems(flags, env)
    assert problem.startswith(line), problem


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"apps": [{"key": "k", "secret": "s", "enabled": "false"}]},
         'apps[0].enabled must be true or false, not "false"'),
        ({"apps": [{"key": "k", "secret": "s", "enable_client_messages": "false"}]},
         'apps[0].enable_client_messages must be true or false, not "false"'),
        ({"apps": [{"key": "k"}]}, "apps[0].secret: missing: every app needs a secret of its own"),
        ({"apps": [{"key": "k", "secret": "s", "colour": "red"}]}, "apps[0].colour: unknown app setting; known: id,"),
        ({"apps": [{"key": "k", "secret": "s", "max_connections": "10"}]},
         'apps[0].max_connections must be a positive integer or null, not "10"'),
        ({"apps": [{"key": "k", "secret": "s", "max_event_bytes": 1.5}]},
         "apps[0].max_event_bytes must be a positive integer, not 1.5"),
        ({"apps": [{"key": "k", "secret": "s", "pong_timeout": True}]},
         "apps[0].pong_timeout must be a positive number, not true"),
        ({"apps": [{"key": "k\ud800", "secret": "s"}]}, "apps[0].key must be a non-empty string without control"),
        ({"apps": [{"key": "k", "secret": "s", "webhooks": [{"url": "http://x", "event_type": []}]}]},
         "apps[0].webhooks[0].event_type: unknown setting; a webhook has: event_types, filter, headers, url"),
        ({"apps": [{"key": "k", "secret": "s", "webhooks": [{"url": "http://x", "filter": {"prefix": "a"}}]}]},
         "apps[0].webhooks[0].filter.prefix: unknown filter"),
        ({"apps": [{"id": "1", "key": "a", "secret": "s"}, {"id": "1", "key": "b", "secret": "s"}]},
         "apps[1].id: duplicate app id '1' (apps[0] has it too)"),
        ({"apps": [{"id": "1", "key": "a", "secret": "s"}, {"id": "2", "key": "a", "secret": "s"}]},
         "apps[1].key: duplicate app key 'a' (apps[0] has it too)"),
        ({"apps": []}, "apps must be a list of at least one app, not []"),
        ({"apps": [1]}, "apps[0] must be a JSON object with id, key and secret, not 1"),
        ({"prot": 7000}, "prot: unknown setting; known: apps, host, port,"),
        ({"port": "7000"}, 'port must be an integer from 0 to 65535, not "7000"'),
        ({"metrics_tls": "false"}, 'metrics_tls must be true or false, not "false"'),
        ({"workers": 2.5}, "workers must be a positive number or 'auto', not 2.5"),
        ('{"port": 1, "port": 2}', 'the key "port" is given twice in one object'),
        ("{not json", "not valid JSON: Expecting property name"),
        ("42", 'must be a JSON object of settings, with the apps in "apps": [...]'),
    ],
)
def test_a_bad_config_file_is_named_with_the_key_path(tmp_path, data, line):
    config = write(tmp_path, data)
    (problem,) = problems({"config": config})
    assert problem.startswith(f"{config}: {line}"), problem


def test_a_missing_config_file_says_it_cannot_be_read(tmp_path):
    missing = str(tmp_path / "nope.json")
    assert problems({"config": missing}) == [f"cannot read config {missing}: No such file or directory"]


def test_every_mistake_is_reported_at_once(tmp_path):
    config = write(tmp_path, {"prot": 1, "apps": [{"key": "k", "enabled": "false", "colour": "red"},
                                                   {"key": "j", "secret": "s", "max_presence_members": 0}]})
    lines = problems({"config": config, "port": "99999", "log_level": "loud"},
                     {"ACTORCAST_PORT": "abc", "SOKETI_DEFAULT_APP_MAX_CONNS": "many"})
    said = "\n".join(lines)
    for part in ("SOKETI_DEFAULT_APP_MAX_CONNS", "ACTORCAST_PORT", f"{config}: prot", "apps[0].enabled",
                 "apps[0].colour", "apps[0].secret", "apps[1].max_presence_members", "--port", "--log-level"):
        assert part in said
    assert "apps[1].id: duplicate app id" in said  # both default to id "1"
    assert len(lines) == 10


def test_a_tls_key_or_metrics_tls_needs_a_certificate(tmp_path):
    pem = write(tmp_path, "pem", "cert.pem")
    assert resolve({"tls_cert": pem}, {})[0].node_kwargs()["tls_cert"] == pem  # the key may be in the file
    (line,) = problems({}, {"ACTORCAST_TLS_KEY": pem})
    assert line == "ACTORCAST_TLS_KEY is set but tls_cert is not: a TLS key needs its certificate (--tls-cert FILE)"
    (line,) = problems({"metrics_tls": True})
    assert line == "--metrics-tls needs TLS: give --tls-cert and --tls-key too"


def test_the_metrics_port_cannot_be_the_main_port():
    (line,) = problems({"port": "7000"}, {"ACTORCAST_METRICS_PORT": "7000"})
    assert line.startswith("ACTORCAST_METRICS_PORT is 7000, the main port too (--port)")
    assert resolve({"port": "7000", "metrics_port": "7000", "metrics_host": "127.0.0.2"}, {})[0].port == 7000


def test_unknown_actorcast_variables_are_warned_about_and_internal_ones_are_not():
    _, warnings = resolve({}, {"ACTORCAST_PROT": "1", "ACTORCAST_WORKER_ID": "2", "ACTORCAST_BUS_SOCKET": "/x"})
    assert warnings == ["ACTORCAST_PROT is not an actorcast setting and is ignored (see actorcast --help)"]


# --- App(...) itself is strict too ---------------------------------------------------


@pytest.mark.parametrize("field", ["enabled", "enable_client_messages", "enable_subscription_count",
                                   "webhook_batching"])
def test_app_switches_take_booleans_only(field):
    with pytest.raises(ConfigError, match=f"'{field}' must be true or false, not 'false'"):
        App(**{field: "false"})


def test_app_and_load_apps_report_every_mistake_at_once():
    with pytest.raises(ConfigError) as info:
        App(enabled="no", max_event_bytes=0, key="")
    assert str(info.value).count("must be") == 3
    with pytest.raises(ConfigError) as info:
        load_apps('{"apps": [{"key": "k", "enabled": 1}, {"key": "j", "secret": "s", "colour": 1}]}')
    assert all(part in str(info.value) for part in ("apps[0]: 'enabled'", "apps[0]: 'secret'", "apps[1]: 'colour'"))


# --- what `config check` prints ---------------------------------------------------------


def test_the_resolved_settings_hide_secrets(tmp_path):
    config = write(tmp_path, {"adapter": "redis://:hunter2@10.0.0.1:6379/0", "apps": [
        {"id": "1", "key": "k", "secret": "very-secret",
         "webhooks": [{"url": "http://127.0.0.1:9/h", "headers": {"Authorization": "Bearer t0ken"}}]}]})
    settings, _ = resolve({"config": config}, {})
    shown = json.dumps(settings.to_dict())
    assert "very-secret" not in shown and "hunter2" not in shown and "t0ken" not in shown
    out = settings.to_dict()
    assert out["adapter"] == "redis://:********@10.0.0.1:6379/0" and out["apps"][0]["key"] == "k"
    assert settings.to_dict(mask=False)["apps"][0]["secret"] == "very-secret"


def test_the_resolved_settings_read_back_as_a_config_file(tmp_path):
    config = write(tmp_path, {"port": 7000, "apps": [{"id": "1", "key": "k", "secret": "s", "webhooks": [
        {"url": "http://127.0.0.1:9/h", "event_types": ["channel_occupied"], "filter": {
            "channel_name_starts_with": "presence-"}}]}]})
    settings, _ = resolve({"config": config}, {})
    again, _ = resolve({"config": write(tmp_path, settings.to_dict(mask=False), "again.json")}, {})
    assert again == settings


# --- the README documents every setting ------------------------------------------------


def test_the_readme_settings_table_lists_every_setting_with_its_flag_key_and_variable():
    text = README.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for name in NODE_RULES:
        flag, env = "--" + name.replace("_", "-"), f"ACTORCAST_{name.upper()}"
        assert any(f"`{flag}" in row and f"`{name}`" in row and f"`{env}`" in row for row in rows), name
    for name in APP_RULES:
        assert any(f"`apps[].{name}`" in row and f"`ACTORCAST_APP_{name.upper()}`" in row for row in rows), name
    for var in soketi.ALIASES:
        assert re.search(rf"`{var}`", text), var
    assert set(LIMIT_RULES) <= set(NODE_RULES)
    assert dataclasses.fields(NodeSettings)[-1].name == "apps"


def test_a_default_app_with_its_own_key_or_id_but_no_secret_is_an_error_naming_the_variables():
    assert problems(env={"ACTORCAST_APP_KEY": "prod-key"}) == [
        "ACTORCAST_APP_KEY set but no secret: an app of your own needs a secret of its own too, the SDKs sign "
        "with it (set ACTORCAST_APP_SECRET)"]
    assert problems(env={"SOKETI_DEFAULT_APP_ID": "7", "ACTORCAST_APP_KEY": "k"})[0].startswith(
        "ACTORCAST_APP_KEY and SOKETI_DEFAULT_APP_ID set but no secret")
    assert resolve({}, {"ACTORCAST_APP_KEY": "prod-key", "SOKETI_DEFAULT_APP_SECRET": "s"})[0].apps[0].secret == "s"
    assert resolve({}, {"ACTORCAST_APP_MAX_CONNECTIONS": "5"})[0].apps[0].key == "app-key"  # still the try-out app


def test_a_wrong_config_file_s_apps_leave_the_environment_s_app_unjudged(tmp_path):
    config = write(tmp_path, {"apps": [{"id": "1", "key": "k", "enabled": "no"}]})
    assert [line.split(": ")[1] for line in problems({"config": config}, {"ACTORCAST_APP_KEY": "env-key"})] == [
        "apps[0].enabled must be true or false, not \"no\"", "apps[0].secret"]


def test_apps_with_the_well_known_secret_are_named_in_a_warning(tmp_path):
    (line,) = resolve({}, {})[0].secret_warnings()
    assert line.startswith("app 1 (key app-key) has the well-known secret 'app-secret': anyone who can reach")
    config = write(tmp_path, {"apps": [{"id": "2", "key": "k2", "secret": "app-secret"},
                                       {"id": "3", "key": "k3", "secret": "s3"}]})
    assert [line.split(" has ")[0] for line in resolve({"config": config}, {})[0].secret_warnings()] == [
        "app 2 (key k2)"]


def test_every_field_of_app_limits_and_node_settings_has_its_rule():
    assert [f.name for f in dataclasses.fields(App)] == list(APP_RULES)
    assert [f.name for f in dataclasses.fields(ServerLimits)] == list(LIMIT_RULES)
    assert [f.name for f in dataclasses.fields(NodeSettings)] == [*NODE_RULES, "apps"]
