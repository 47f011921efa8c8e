"""Keep secrets out of logs and messages."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_PARAMS = {"password", "pass", "passwd", "pwd", "secret", "token", "sslpassword"}


def redact_url(url: str) -> str:
    """The URL with any password (in the authority or the query) replaced by ``***``.

    Also a list of URLs (``RABBITMQ_URL`` of a cluster: comma-separated) and a URL with
    several hosts (``postgresql://user:pw@h1:5432,h2:5432/db``)."""
    if url.count("://") > 1:
        return ",".join(redact_url(u.strip()) for u in url.split(","))
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hosts}")
    if parts.query:
        query = [
            (k, "***" if k.lower() in _SECRET_PARAMS else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)
