"""Every setting of the service, read from the environment in this one module.

Names users already know keep their usual spelling (``DATABASE_URL``, ``RABBITMQ_URL``,
``REDIS_URL``, ``API_KEY``, ``API_KEYS``); everything else is ``EVENTS_*``. Each setting
is declared once, as a field of ``Settings`` (variable, default, one-line doc, parser with
its bounds); ``SETTINGS``, ``events config --markdown``, ``.env.example`` and the README's
table (which a test keeps equal) all come from those fields.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: where it goes, how it is parsed, what it means."""

    env: str
    attr: str
    default: str
    doc: str
    parse: Callable[[str], Any] = str


def setting(env: str, default: str, doc: str, parse: Callable[[str], Any] = str) -> Any:
    """Declare a field of ``Settings`` as the setting ``env`` (its attribute is the field)."""
    return field(metadata={"setting": Setting(env, "", default, doc, parse)})


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {raw!r}")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(f"must be zero or a positive integer, got {raw!r}")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(f"must be a positive number, got {raw!r}")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError(f"must be zero or a positive number, got {raw!r}")
    return value


def _failure_mode(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"open", "closed"}:
        raise ValueError(f"must be 'open' or 'closed', got {raw!r}")
    return value


def _overrides(raw: str) -> dict[str, tuple[float, int]]:
    """``key_id=rate[:burst],...`` (burst 0: ten seconds' worth)."""
    out: dict[str, tuple[float, int]] = {}
    for item in (i.strip() for i in raw.split(",") if i.strip()):
        key_id, sep, spec = item.partition("=")
        if not sep or not key_id.strip():
            raise ValueError(f"expected key_id=rate[:burst], got {item!r}")
        rate, _, burst = spec.partition(":")
        out[key_id.strip()] = (_non_negative_float(rate), _non_negative_int(burst or "0"))
    return out


# What a key may do: send events (POST /events and the capture routes), read analytics
# (/stats/*), operate the service over HTTP.
SCOPES = ("ingest", "read", "admin")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A configured key: its secret and the scopes it grants."""

    secret: str
    scopes: frozenset[str]


def parse_key(raw: str) -> ApiKey:
    """``KEY`` (every scope) or ``KEY:scope+scope``."""
    secret, sep, listed = raw.strip().rpartition(":")
    if not sep:
        return ApiKey(raw.strip(), frozenset(SCOPES))
    scopes = [s.strip() for s in listed.split("+")]
    unknown = [s for s in scopes if s not in SCOPES]
    if not secret or unknown or not scopes:
        raise ValueError(
            f"a key is KEY or KEY:scope+scope with scopes {', '.join(SCOPES)}; "
            f"got scope(s) {'+'.join(unknown) or '(none)'!r}"
        )
    return ApiKey(secret, frozenset(scopes))


def _keys(raw: str) -> tuple[str, ...]:
    entries = tuple(k.strip() for k in raw.split(",") if k.strip())
    for entry in entries:
        parse_key(entry)  # refuse a malformed entry when the configuration is loaded
    return entries


def _key(raw: str) -> str:
    if raw.strip():
        parse_key(raw)
    return raw.strip()


def _identifier(raw: str) -> str:
    value = raw.strip()
    if not value or not all(c.isalnum() or c in "_-." for c in value):
        raise ValueError(f"must be letters, digits, '_', '-' or '.', got {raw!r}")
    return value


def _queue_type(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"quorum", "classic"}:
        raise ValueError(f"must be 'quorum' or 'classic', got {raw!r}")
    return value


def _utc_date(raw: str) -> datetime:
    value = datetime.fromisoformat(raw.strip())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"json", "text"}:
        raise ValueError(f"must be 'json' or 'text', got {raw!r}")
    return value


def _default_api_workers() -> str:
    return str(max(1, min(4, os.cpu_count() or 1)))


@dataclass(frozen=True, slots=True)
class Settings:
    """The parsed configuration, passed explicitly to whatever needs it.

    Each field is a setting, declared once: its environment variable, default (as the
    environment would write it), one-line doc and parser (which holds its bounds). Field
    order is the README table's order.
    """

    # Connections
    database_url: str = setting(
        "DATABASE_URL",
        "postgresql://postgres@127.0.0.1:5432/events",
        "PostgreSQL connection URL (the database is created by `events migrate` if missing).",
    )
    analytics_database_url: str = setting(
        "ANALYTICS_DATABASE_URL",
        "",
        "A PostgreSQL standby (hot_standby) for the hot-side reads of `/stats/*`; empty: "
        "`DATABASE_URL`. Answers then lag the primary by the standby's replay delay; a read "
        "cancelled by a recovery conflict is retried.",
    )
    rabbitmq_url: str = setting(
        "RABBITMQ_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2F",
        "RabbitMQ (AMQP 0-9-1) connection URL, or several comma-separated (one per node of a "
        "cluster): every connection fails over between them.",
    )
    redis_url: str = setting(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "Redis connection URL (rate limits and Idempotency-Key, shared by every API process).",
    )
    # Authentication
    api_key: str = setting(
        "API_KEY",
        "",
        "One API key, with every scope unless it is written `KEY:scope+scope`.",
        _key,
    )
    api_keys_list: tuple[str, ...] = setting(
        "API_KEYS",
        "",
        "Comma-separated API keys, added to `API_KEY`: each `KEY` (every scope) or "
        "`KEY:scope+scope`, scopes `ingest` (send events), `read` (analytics), `admin`.",
        _keys,
    )
    allow_no_auth: bool = setting(
        "EVENTS_ALLOW_NO_AUTH",
        "false",
        "Set to `true` to run without any API key (local experiments only; every request "
        "is then accepted as key id `anonymous`).",
        _bool,
    )
    # Queue
    queue_prefix: str = setting(
        "EVENTS_QUEUE_PREFIX",
        "events",
        "Prefix of the RabbitMQ queue names: `<prefix>_queue` and `<prefix>_queue_dlq`.",
        _identifier,
    )
    queue_type: str = setting(
        "EVENTS_QUEUE_TYPE",
        "quorum",
        "`quorum` (replicated, fsynced, poison-message limit) or `classic` durable queue. "
        "Only applies when the queue is first declared.",
        _queue_type,
    )
    delivery_limit: int = setting(
        "EVENTS_DELIVERY_LIMIT",
        "100",
        "Quorum queues: a message returned to the queue this many times (its consumer died or "
        "stopped before storing it; every worker restart counts for the messages it held) "
        "is moved to the dead-letter queue.",
        _positive_int,
    )
    publish_timeout: float = setting(
        "EVENTS_PUBLISH_TIMEOUT",
        "10",
        "Seconds the API waits for the broker's publisher confirm before answering 503.",
        _positive_float,
    )
    queue_max_messages: int = setting(
        "EVENTS_QUEUE_MAX_MESSAGES",
        "100000",
        "Backpressure: once this many messages (accepted requests) wait in the queue, the "
        "broker refuses new ones and the API answers 503 with Retry-After (0: no limit). "
        "Only applies when the queue is first declared.",
        _non_negative_int,
    )
    queue_max_bytes: int = setting(
        "EVENTS_QUEUE_MAX_BYTES",
        str(8 * 1024**3),
        "Backpressure: the same for the bytes waiting in the queue (0: no limit).",
        _non_negative_int,
    )
    max_attempts: int = setting(
        "EVENTS_MAX_ATTEMPTS",
        "8",
        "A micro-batch that PostgreSQL keeps refusing for a reason other than being "
        "unreachable is split after this many attempts; a message failing alone this often "
        "goes to the dead-letter queue (an outage never counts).",
        _positive_int,
    )
    # Protection
    rate_limit: float = setting(
        "EVENTS_RATE_LIMIT",
        "0",
        "Events per second per API key, shared by every API process through Redis "
        "(token bucket; 0: no limit).",
        _non_negative_float,
    )
    rate_burst: int = setting(
        "EVENTS_RATE_BURST",
        "0",
        "Bucket size in events (0: ten seconds' worth of EVENTS_RATE_LIMIT). A request with "
        "more events than this is a 413.",
        _non_negative_int,
    )
    rate_limit_overrides: Mapping[str, tuple[float, int]] = setting(
        "EVENTS_RATE_LIMIT_OVERRIDES",
        "",
        "Per-key limits, `key_id=rate[:burst],...` (key ids as logged, e.g. `key_1a2b3c4d5e6f`).",
        _overrides,
    )
    rate_limit_rpm: int = setting(
        "RATE_LIMIT",
        "0",
        "Requests per minute per API key (a second bucket, checked as well; 0: no limit).",
        _non_negative_int,
    )
    redis_failure: str = setting(
        "EVENTS_REDIS_FAILURE",
        "open",
        "When Redis cannot be reached: `open` (serve without rate limits and idempotency, "
        "count it in `redis_errors_total`) or `closed` (answer 503).",
        _failure_mode,
    )
    idempotency_ttl: int = setting(
        "EVENTS_IDEMPOTENCY_TTL",
        "86400",
        "Seconds an Idempotency-Key is remembered (its answer replayed).",
        _positive_int,
    )
    # Request limits
    max_body_bytes: int = setting(
        "EVENTS_MAX_BODY_BYTES",
        str(32 * 1024 * 1024),
        "Largest request body in bytes, checked on the wire and again after decompression "
        "(413 beyond it).",
        _positive_int,
    )
    max_compression_ratio: int = setting(
        "EVENTS_MAX_COMPRESSION_RATIO",
        "200",
        "A compressed body may inflate at most this many times its size (plus 1 MiB); a "
        "bomb stops with 413 as soon as it goes past.",
        _positive_int,
    )
    max_header_bytes: int = setting(
        "EVENTS_MAX_HEADER_BYTES",
        "16384",
        "Largest request line plus headers; beyond it the connection gets 431 and is closed.",
        _positive_int,
    )
    client_timeout: float = setting(
        "EVENTS_CLIENT_TIMEOUT",
        "30",
        "Seconds a client may take to send its headers, and again its body (408 / closed).",
        _positive_float,
    )
    max_connections: int = setting(
        "EVENTS_MAX_CONNECTIONS",
        "1000",
        "Connections one API process serves at once; more get 503.",
        _positive_int,
    )
    worker_metrics_port: int = setting(
        "EVENTS_WORKER_METRICS_PORT",
        "0",
        "Port where `events worker` serves Prometheus metrics of its processes (0: off; "
        "with `events up` the API's /metrics already includes them).",
        _non_negative_int,
    )
    worker_metrics_host: str = setting(
        "EVENTS_WORKER_METRICS_HOST",
        "0.0.0.0",  # noqa: S104 - a metrics endpoint is scraped from other hosts
        "Address of the worker metrics endpoint.",
        str,
    )
    compact_metrics_port: int = setting(
        "EVENTS_COMPACT_METRICS_PORT",
        "0",
        "Port where `events compact --every` serves its Prometheus metrics (0: off), on "
        "`EVENTS_WORKER_METRICS_HOST`.",
        _non_negative_int,
    )
    max_events_per_request: int = setting(
        "EVENTS_MAX_EVENTS_PER_REQUEST",
        "50000",
        "Most events accepted in one request (413 beyond it).",
        _positive_int,
    )
    max_event_bytes: int = setting(
        "EVENTS_MAX_EVENT_BYTES",
        str(64 * 1024),
        "Largest single event (ids, type and properties JSON) in bytes; a larger event is "
        "refused, the others are kept.",
        _positive_int,
    )
    max_user_id_length: int = setting(
        "EVENTS_MAX_USER_ID_LENGTH",
        "256",
        "Longest `user_id` in characters.",
        _positive_int,
    )
    max_event_type_length: int = setting(
        "EVENTS_MAX_EVENT_TYPE_LENGTH",
        "128",
        "Longest `event_type` in characters.",
        _positive_int,
    )
    max_future_seconds: int = setting(
        "EVENTS_MAX_FUTURE_SECONDS",
        "3600",
        "How far in the future `occurred_at` may be (clock skew allowance).",
        _non_negative_int,
    )
    min_occurred_at: datetime = setting(
        "EVENTS_MIN_OCCURRED_AT",
        "1970-01-01T00:00:00+00:00",
        "Earliest accepted `occurred_at` (ISO-8601).",
        _utc_date,
    )
    max_json_values: int = setting(
        "EVENTS_MAX_JSON_VALUES",
        "1000000",
        "Most JSON values (objects, arrays and separated values, counted from the bytes "
        "before decoding) in one JSON or NDJSON body: bounds the memory decoding takes "
        "(413 `too_many_values` beyond it).",
        _positive_int,
    )
    decode_processes: int = setting(
        "EVENTS_DECODE_PROCESSES",
        "1",
        "Processes per API worker that decode large bodies, so the event loop keeps "
        "answering meanwhile (started on the first large body).",
        _positive_int,
    )
    decode_inline_bytes: int = setting(
        "EVENTS_DECODE_INLINE_BYTES",
        str(256 * 1024),
        "Bodies up to this size (after decompression) are decoded on the event loop; "
        "larger ones in a decoding process.",
        _non_negative_int,
    )
    decode_budget_bytes: int = setting(
        "EVENTS_DECODE_BUDGET_BYTES",
        str(64 * 1024 * 1024),
        "Body bytes one API process reads and decodes at once (at least "
        "EVENTS_MAX_BODY_BYTES); a request that does not fit waits, then gets 503 "
        "`overloaded`.",
        _positive_int,
    )
    decode_wait_seconds: float = setting(
        "EVENTS_DECODE_WAIT_SECONDS",
        "2",
        "How long a request waits for room in the decode budget before the 503.",
        _non_negative_float,
    )
    # Waiting for commit
    wait_timeout: float = setting(
        "EVENTS_WAIT_TIMEOUT",
        "10",
        "Seconds `?wait=true` waits for the commit by default before answering 202.",
        _positive_float,
    )
    wait_timeout_max: float = setting(
        "EVENTS_WAIT_TIMEOUT_MAX",
        "60",
        "Largest `?timeout=` a request may ask for with `?wait=true`.",
        _positive_float,
    )
    # Worker
    batch_max_rows: int = setting(
        "EVENTS_BATCH_MAX_ROWS",
        "20000",
        "A worker commits its micro-batch once it holds this many events...",
        _positive_int,
    )
    batch_max_age_ms: int = setting(
        "EVENTS_BATCH_MAX_AGE_MS",
        "200",
        "...or once its oldest message waited this many milliseconds.",
        _positive_int,
    )
    prefetch: int = setting(
        "EVENTS_PREFETCH",
        "256",
        "Unacknowledged messages a worker process may hold (RabbitMQ prefetch count).",
        _positive_int,
    )
    worker_max_inflight_bytes: int = setting(
        "EVENTS_WORKER_MAX_INFLIGHT_BYTES",
        str(256 * 1024 * 1024),
        "Bytes of message bodies a worker process holds at most (received, not yet "
        "acknowledged): it sizes its prefetch window to the room left for bodies as large as "
        "the recent ones, so it stays within this unless bodies grow, when at most one window "
        "more arrives (docs/reliability.md). A single larger message is taken alone.",
        _positive_int,
    )
    worker_concurrency: int = setting(
        "EVENTS_WORKER_CONCURRENCY",
        "2",
        "Micro-batches one worker process writes at once, each on its own PostgreSQL connection.",
        _positive_int,
    )
    worker_processes: int = setting(
        "EVENTS_WORKER_PROCESSES",
        "1",
        "Worker processes started by `events up` / `events worker`.",
        _positive_int,
    )
    retry_base_ms: int = setting(
        "EVENTS_RETRY_BASE_MS",
        "200",
        "First back-off after a transient database error (doubles, with jitter).",
        _positive_int,
    )
    retry_max_ms: int = setting(
        "EVENTS_RETRY_MAX_MS",
        "30000",
        "Longest back-off between two attempts of the same micro-batch.",
        _positive_int,
    )
    shutdown_timeout: float = setting(
        "EVENTS_SHUTDOWN_TIMEOUT",
        "30",
        "Seconds a stopping worker may spend finishing its current micro-batches.",
        _positive_float,
    )
    # Storage
    partitions_ahead_days: int = setting(
        "EVENTS_PARTITIONS_AHEAD_DAYS",
        "3",
        "Daily partitions created ahead of today (days of the hot window are also created on "
        "demand).",
        _non_negative_int,
    )
    hot_days: int = setting(
        "EVENTS_HOT_DAYS",
        "7",
        "UTC days kept in PostgreSQL, today included; older days belong to the Parquet lake "
        "(`events compact` moves them; events for them wait in the default partition).",
        _positive_int,
    )
    lake_dir: str = setting(
        "EVENTS_LAKE_DIR",
        "./lake",
        "Root of the Parquet lake (`<dir>/events/date=YYYY-MM-DD/*.parquet`).",
    )
    compact_file_rows: int = setting(
        "EVENTS_COMPACT_FILE_ROWS",
        "2000000",
        "Most rows in one Parquet file written by the compactor (bounds its memory).",
        _positive_int,
    )
    max_query_days: int = setting(
        "EVENTS_MAX_QUERY_DAYS",
        "366",
        "Longest date range (days) an analytics request may cover.",
        _positive_int,
    )
    query_threads: int = setting(
        "EVENTS_QUERY_THREADS",
        str(os.cpu_count() or 1),
        "DuckDB threads per API process for analytics queries (default: CPU count).",
        _positive_int,
    )
    query_timeout: float = setting(
        "EVENTS_QUERY_TIMEOUT",
        "10",
        "Seconds an analytics query may take, its PostgreSQL and DuckDB parts together "
        "(503 `query_timeout` beyond).",
        _positive_float,
    )
    query_concurrency: int = setting(
        "EVENTS_QUERY_CONCURRENCY",
        "2",
        "Analytics queries one API process runs at once; more get 503 `too_many_queries` "
        "with Retry-After.",
        _positive_int,
    )
    query_memory_bytes: int = setting(
        "EVENTS_QUERY_MEMORY_BYTES",
        "0",
        "DuckDB memory limit per API process (0: a quarter of the machine's memory divided "
        "by EVENTS_API_WORKERS); a query that needs more gets 503 `query_too_large`.",
        _non_negative_int,
    )
    hot_mirror_rows: int = setting(
        "EVENTS_HOT_MIRROR_ROWS",
        "5000000",
        "Hot rows each API process keeps column-wise in memory for segmented queries and "
        "funnels (about 100 bytes each); past it they read PostgreSQL instead. 0: never.",
        _non_negative_int,
    )
    user_index_users: int = setting(
        "EVENTS_USER_INDEX_USERS",
        "5000000",
        "Distinct users each API process may number for its bitmaps of users per day and "
        "value (analytics/user_sets.py; about 100 bytes each); past it queries count from "
        "rows instead. 0: never.",
        _non_negative_int,
    )
    analytics_pool_size: int = setting(
        "EVENTS_ANALYTICS_POOL_SIZE",
        "2",
        "PostgreSQL connections per API process for analytics, apart from the ones "
        "readiness, `?wait=true` and commit lookups use.",
        _positive_int,
    )
    db_pool_size: int = setting(
        "EVENTS_DB_POOL_SIZE",
        "4",
        "PostgreSQL connections per API process (readiness and `?wait=true`).",
        _positive_int,
    )
    compact_lock_timeout_ms: int = setting(
        "EVENTS_COMPACT_LOCK_TIMEOUT_MS",
        "100",
        "How long one attempt of the compactor to lock `events` may wait (ingest queues "
        "behind a waiting lock); it retries with back-off rather than wait longer.",
        _positive_int,
    )
    # Serving
    bind: str = setting(
        "EVENTS_BIND",
        "127.0.0.1:8000",
        "Address `events serve` listens on.",
    )
    api_workers: int = setting(
        "EVENTS_API_WORKERS",
        _default_api_workers(),
        "gunicorn worker processes for the API (default: CPU count, at most 4).",
        _positive_int,
    )
    log_level: str = setting(
        "EVENTS_LOG_LEVEL",
        "INFO",
        "Log level (DEBUG, INFO, WARNING, ...).",
    )
    log_format: str = setting(
        "EVENTS_LOG_FORMAT",
        "json",
        "`json` (one object per line) or `text`.",
        _log_format,
    )

    @property
    def api_keys(self) -> tuple[str, ...]:
        """Every configured key's secret, `API_KEY` first, without repeats."""
        return tuple(dict.fromkeys(k.secret for k in self.keys))

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        """Every configured key with its scopes (a secret listed twice: the union)."""
        entries = ((self.api_key,) if self.api_key else ()) + self.api_keys_list
        scopes: dict[str, frozenset[str]] = {}
        for key in map(parse_key, entries):
            scopes[key.secret] = scopes.get(key.secret, frozenset()) | key.scopes
        return tuple(ApiKey(secret, granted) for secret, granted in scopes.items())

    @property
    def queue_name(self) -> str:
        return f"{self.queue_prefix}_queue"

    @property
    def dead_letter_queue_name(self) -> str:
        return f"{self.queue_name}_dlq"

    @property
    def commit_channel(self) -> str:
        """PostgreSQL NOTIFY channel on which workers announce committed batches."""
        return f"{self.queue_prefix}_committed"

    @property
    def duckdb_memory_bytes(self) -> int:
        """EVENTS_QUERY_MEMORY_BYTES, or a quarter of the memory per API worker."""
        if self.query_memory_bytes:
            return self.query_memory_bytes
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return max(256 * 1024 * 1024, total // 4 // max(1, self.api_workers))

    def require_auth(self) -> None:
        """Refuse to serve without a key unless the operator opted out explicitly."""
        if not self.api_keys and not self.allow_no_auth:
            raise ConfigError(
                "no API key configured: set API_KEY=<secret> (or API_KEYS=k1,k2) before "
                "starting the API, or EVENTS_ALLOW_NO_AUTH=true for a local, unauthenticated "
                "instance"
            )

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some attributes replaced (tests and CLI flags use it)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


# Every setting, in declaration order (the README table, .env.example, `events config`).
SETTINGS: tuple[Setting, ...] = tuple(
    replace(f.metadata["setting"], attr=f.name) for f in fields(Settings)
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every setting from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        raw = env.get(setting.env, setting.default)
        try:
            values[setting.attr] = setting.parse(raw)
        except ValueError as ex:
            problems.append(f"{setting.env}: {ex}")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    settings = Settings(**values)
    if settings.wait_timeout > settings.wait_timeout_max:
        raise ConfigError("EVENTS_WAIT_TIMEOUT must not exceed EVENTS_WAIT_TIMEOUT_MAX")
    if settings.decode_budget_bytes < settings.max_body_bytes:
        raise ConfigError("EVENTS_DECODE_BUDGET_BYTES must be at least EVENTS_MAX_BODY_BYTES")
    return settings


def settings_env_example() -> str:
    """``.env.example``: every setting with its default (`events config --env-example`)."""
    lines = [
        "# Every setting of the service, with its default. Copy to .env and change what you",
        "# need: compose.yml passes .env to the containers (it sets the server URLs itself),",
        "# and `events` reads the same variables from the environment.",
        "# Generated by `events config --env-example`; a test keeps it in step with the code.",
    ]
    for s in SETTINGS:
        lines.append("")
        lines += [f"# {text}" for text in textwrap.wrap(s.doc, 86)]
        if s.env in {"EVENTS_API_WORKERS", "EVENTS_QUERY_THREADS"}:
            lines.append(f"# {s.env}=")
        else:
            lines.append(f"{s.env}={s.default}")
    return "\n".join(lines) + "\n"


def settings_markdown() -> str:
    """The configuration table for the README (`events config --markdown`)."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for s in SETTINGS:
        if s.env == "EVENTS_API_WORKERS":
            default = "CPU count, at most 4"
        elif s.env == "EVENTS_QUERY_THREADS":
            default = "CPU count"
        else:
            default = f"`{s.default}`" if s.default else "(unset)"
        lines.append(f"| `{s.env}` | {default} | {s.doc} |")
    return "\n".join(lines)
