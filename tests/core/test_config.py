"""Configuration parsing and secret redaction."""

from __future__ import annotations

import pytest

from core.config import load_settings
from core.errors import ConfigError
from core.redact import redact_url


def test_defaults_point_at_the_local_servers() -> None:
    s = load_settings({})
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/events"
    assert s.rabbitmq_url.startswith("amqp://guest:guest@127.0.0.1:5672")
    assert (s.queue_name, s.dead_letter_queue_name) == ("events_queue", "events_queue_dlq")
    assert s.api_keys == ()


def test_api_key_and_api_keys_combine_without_repeats() -> None:
    s = load_settings({"API_KEY": "a", "API_KEYS": "b, a ,c,,"})
    assert s.api_keys == ("a", "b", "c")


def test_invalid_values_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "EVENTS_BATCH_MAX_ROWS": "0",
                "EVENTS_QUEUE_TYPE": "stream",
                "EVENTS_ALLOW_NO_AUTH": "perhaps",
            }
        )
    message = str(info.value)
    for name in ("EVENTS_BATCH_MAX_ROWS", "EVENTS_QUEUE_TYPE", "EVENTS_ALLOW_NO_AUTH"):
        assert name in message


def test_no_key_refuses_to_serve_unless_opted_out() -> None:
    with pytest.raises(ConfigError, match="API_KEY"):
        load_settings({}).require_auth()
    load_settings({"EVENTS_ALLOW_NO_AUTH": "true"}).require_auth()
    load_settings({"API_KEY": "k"}).require_auth()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:s3cret@db:5432/events", "postgresql://u:***@db:5432/events"),
        ("amqp://guest:guest@mq/%2F", "amqp://guest:***@mq/%2F"),
        (
            "postgresql://db/events?user=u&password=s3cret&sslmode=require",
            "postgresql://db/events?user=u&password=***&sslmode=require",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        # Several hosts (a primary and its standby), several URLs (a RabbitMQ cluster).
        (
            "postgresql://u:s3cret@h1:5441,h2:5442/db?target_session_attrs=read-write",
            "postgresql://u:***@h1:5441,h2:5442/db?target_session_attrs=read-write",
        ),
        (
            "amqp://g:s3cret@n1:5681/%2F, amqp://g:s3cret@n2:5682/%2F",
            "amqp://g:***@n1:5681/%2F,amqp://g:***@n2:5682/%2F",
        ),
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://u:s3:cret@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_secrets_are_redacted_from_urls(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "s3cret" not in redact_url(url)
