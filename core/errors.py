"""The one root of selftaught's errors.

Each subclass says who must act. Only ``cli.py`` turns these into messages and exit
codes; everywhere else raises them with a message that names the problem and the fix.
"""


class SelftaughtError(Exception):
    """Root of every error selftaught raises on purpose."""


class ConfigError(SelftaughtError):
    """Bad input or configuration: the user must act (exit code 2)."""


class ModelError(SelftaughtError):
    """A model provider failed in a way retrying will not fix."""


class TransientModelError(ModelError):
    """A provider failure worth retrying: rate limit, 5xx, timeout."""


class SandboxError(SelftaughtError):
    """The sandbox itself could not run (not: the code inside it failed)."""


class StoreError(SelftaughtError):
    """The durable store is unreadable or was written by an incompatible version."""
