"""soketi's environment variables read as actorcast settings (``transport.soketi`` through ``resolve``). Pure."""

from __future__ import annotations

import pytest

from tests.protocol.test_settings import problems, write
from transport import soketi
from transport.config import APP_RULES
from transport.settings import NODE_RULES, resolve


def test_soketi_variables_set_what_they_mean():
    env = {"SOKETI_PORT": "6002", "SOKETI_METRICS_SERVER_PORT": "9602", "SOKETI_DEBUG": "1",
           "SOKETI_SHUTDOWN_GRACE_PERIOD": "2500", "SOKETI_HTTP_MAX_REQUEST_SIZE": "2",
           "SOKETI_DEFAULT_APP_ID": "app-id", "SOKETI_DEFAULT_APP_KEY": "s-key", "SOKETI_DEFAULT_APP_SECRET": "s-sec",
           "SOKETI_DEFAULT_APP_ENABLED": "true", "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "false",
           "SOKETI_DEFAULT_APP_MAX_CONNS": "100", "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC": "5",
           "SOKETI_DEFAULT_APP_WEBHOOKS": '[{"url": "http://127.0.0.1:9/h", "event_types": ["member_added"]}]',
           "SOKETI_WEBHOOKS_BATCHING": "true", "SOKETI_WEBHOOKS_BATCHING_DURATION": "100",
           "SOKETI_EVENT_MAX_CHANNELS_AT_ONCE": "50", "SOKETI_EVENT_MAX_NAME_LENGTH": "150",
           "SOKETI_EVENT_MAX_SIZE_IN_KB": "4", "SOKETI_EVENT_MAX_BATCH_SIZE": "20",
           "SOKETI_CHANNEL_LIMITS_MAX_NAME_LENGTH": "120", "SOKETI_PRESENCE_MAX_MEMBERS": "50",
           "SOKETI_PRESENCE_MAX_MEMBER_SIZE": "1.5", "SOKETI_MODE": "full"}
    settings, warnings = resolve({}, env)
    assert warnings == []
    assert (settings.port, settings.metrics_port, settings.log_level) == (6002, 9602, "DEBUG")
    assert settings.shutdown_grace == 2.5 and settings.max_body_bytes == 2 * 1024 * 1024
    (app,) = settings.apps
    assert (app.id, app.key, app.secret, app.enabled, app.enable_client_messages) == (
        "app-id", "s-key", "s-sec", True, False)
    assert (app.max_connections, app.client_events_per_second) == (100, 5)
    assert [h.event_types for h in app.webhooks] == [frozenset({"member_added"})]
    assert app.webhook_batching and app.webhook_batch_ms == 100
    assert (app.max_channels_per_event, app.max_event_name_length, app.max_event_bytes) == (50, 150, 4096)
    assert (app.max_batch_events, app.max_channel_name_length) == (20, 120)
    assert (app.max_presence_members, app.max_user_info_bytes) == (50, 1536)


def test_soketi_minus_one_connections_is_no_limit():
    assert resolve({}, {"SOKETI_DEFAULT_APP_MAX_CONNS": "-1"})[0].apps[0].max_connections is None


def test_soketi_tls_and_metrics_switch(tmp_path):
    pem = write(tmp_path, "pem", "c.pem")
    settings, _ = resolve({}, {"SOKETI_SSL_CERT": pem, "SOKETI_SSL_KEY": pem, "SOKETI_METRICS_ENABLED": "false",
                               "SOKETI_METRICS_SERVER_PORT": "9700"})
    assert (settings.tls_cert, settings.tls_key, settings.metrics_port) == (pem, pem, None)
    assert resolve({}, {"SOKETI_METRICS_ENABLED": "true"})[0].metrics_port == 9601


def test_actorcast_variables_win_over_soketi_s():
    env = {"SOKETI_PORT": "6002", "ACTORCAST_PORT": "6003", "SOKETI_DEFAULT_APP_KEY": "s-key",
           "ACTORCAST_APP_KEY": "a-key", "SOKETI_DEFAULT_APP_SECRET": "s-sec"}
    settings, _ = resolve({}, env)
    assert (settings.port, settings.apps[0].key, settings.apps[0].secret) == (6003, "a-key", "s-sec")


def test_soketi_redis_adapter_becomes_a_redis_url():
    env = {"SOKETI_ADAPTER_DRIVER": "redis", "SOKETI_DB_REDIS_HOST": "10.0.0.5", "SOKETI_DB_REDIS_PORT": "6380",
           "SOKETI_DB_REDIS_DB": "2", "SOKETI_DB_REDIS_PASSWORD": "p@ss/word"}
    settings, warnings = resolve({}, env)
    assert settings.adapter == "redis://:p%40ss%2Fword@10.0.0.5:6380/2" and warnings == []
    assert resolve({}, {"SOKETI_ADAPTER_DRIVER": "redis"})[0].adapter == "redis://127.0.0.1:6379/0"
    assert resolve({}, {"SOKETI_ADAPTER_DRIVER": "local"})[0].adapter is None


def test_soketi_redis_settings_without_the_redis_adapter_are_warned_about():
    _, warnings = resolve({}, {"SOKETI_DB_REDIS_HOST": "10.0.0.5"})
    assert warnings == ["SOKETI_DB_REDIS_HOST is ignored: actorcast uses Redis only as the adapter "
                        "(SOKETI_ADAPTER_DRIVER=redis)"]


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"SOKETI_ADAPTER_DRIVER": "nats"}, 'SOKETI_ADAPTER_DRIVER must be one of local, redis, not "nats"'),
        ({"SOKETI_PORT": "x"}, 'SOKETI_PORT must be an integer from 0 to 65535, not "x"'),
        ({"SOKETI_DEFAULT_APP_MAX_CONNS": "0"}, 'SOKETI_DEFAULT_APP_MAX_CONNS must be a positive integer, or -1'),
        ({"SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC": "-1"},
         "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC must be a positive number (actorcast always limits"),
        ({"SOKETI_DEFAULT_APP_WEBHOOKS": '[{"url": "http://x", "lambda_function": "f"}]'},
         "SOKETI_DEFAULT_APP_WEBHOOKS[0].lambda_function: unknown setting"),
        ({"SOKETI_DEFAULT_APP_ENABLED": "nope"}, 'SOKETI_DEFAULT_APP_ENABLED must be true, false, 1 or 0'),
        ({"SOKETI_ADAPTER_DRIVER": "redis", "SOKETI_DB_REDIS_PORT": "x"},
         'SOKETI_DB_REDIS_PORT must be an integer from 1 to 65535, not "x"'),
    ],
)
def test_a_bad_soketi_variable_is_an_error_naming_it(env, line):
    (problem,) = problems({}, env)
    assert problem.startswith(line), problem


def test_each_unsupported_soketi_variable_is_one_warning_naming_it():
    env = {"SOKETI_NODE_ID": "a", "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "5", "SOKETI_MODE": "worker",
           "SOKETI_PORT": "6002"}
    _, warnings = resolve({}, env)
    assert len(warnings) == 3
    for var in ("SOKETI_NODE_ID", "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC", "SOKETI_MODE"):
        assert sum(var in line for line in warnings) == 1


def test_every_soketi_alias_targets_a_real_setting():
    for var, alias in soketi.ALIASES.items():
        if alias.setting.startswith("app."):
            assert alias.setting[4:] in APP_RULES, var
        else:
            assert alias.setting in NODE_RULES or alias.setting == "mode", var
