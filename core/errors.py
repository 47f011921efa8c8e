"""The root of the service's exceptions, and the transient/terminal marker.

An error says by its class whether trying again may help (``TransientError``) or will fail
the same way (``TerminalError``), so retry logic never matches error text.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Root of every error the service raises on purpose."""

    transient: bool = False


class TransientError(ServiceError):
    """Trying again later may succeed (a server is unreachable, a lock conflict)."""

    transient = True


class TerminalError(ServiceError):
    """Trying again will fail the same way (bad data, bad configuration)."""

    transient = False


class ConfigError(TerminalError):
    """The configuration is missing or invalid; the message says how to fix it."""
