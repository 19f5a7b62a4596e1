"""Scrub things that look like credentials out of text before it leaves the process.

Used for exports, and reusable for logs and stored trajectories. Pure apart from reading
the environment, and that only when no ``env`` mapping is passed.

The contract: ``scrub_secrets(text)`` returns ``text`` with every recognised secret
replaced by ``[REDACTED]`` (for ``NAME=value`` and ``Bearer value`` shapes the name or
the word ``Bearer`` is kept so the text still reads). It is idempotent and leaves text
without secrets unchanged. It errs towards redacting: a false positive costs a few
characters of a training example, a false negative leaks a key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

REDACTED = "[REDACTED]"

SECRET_ENV_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
"""Environment variables whose names end like this hold secrets; their values are scrubbed."""

MIN_ENV_SECRET_LEN = 8
"""Shorter env values are not scrubbed: replacing e.g. ``1`` everywhere would wreck text."""

# Provider key shapes. Each needs a long enough tail that ordinary words never match.
_KEY_PATTERNS = [
    r"sk-ant-[A-Za-z0-9_\-]{16,}",  # Anthropic
    r"sk-[A-Za-z0-9_\-]{16,}",  # OpenAI (sk-..., sk-proj-...) and look-alikes
    r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{30,}",
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"AIza[0-9A-Za-z_\-]{35}",  # Google API key
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack
    r"gsk_[A-Za-z0-9]{20,}",  # Groq
    r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",  # JWT
]
# The lookarounds keep a match from starting or ending inside a longer word.
_KEY_RE = re.compile(r"(?<![A-Za-z0-9_\-])(?:" + "|".join(_KEY_PATTERNS) + r")(?![A-Za-z0-9_\-])")

# "Authorization: Bearer <token>": the token may have any shape, so length is the guard.
_BEARER_RE = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{16,}")

# NAME=value / "name": "value" where NAME says it is a secret. The value must be at
# least 8 characters and contain a letter, so "max_token: 256" survives.
_ASSIGN_RE = re.compile(
    r"""(?ix)
    (
      \b[a-z0-9_]*(?:api[_-]?key|access[_-]?key|secret[_-]?key|token|secret|password|passwd)
      ["']?\s*[:=]\s*["']?
    )
    (?=[^\s"',;]*[a-z])           # the value has a letter somewhere
    [^\s"',;]{8,}
    """
)


def scrub_secrets(text: str, env: Mapping[str, str] | None = None) -> str:
    """Return ``text`` with API keys, bearer tokens, secret assignments and the values of
    secret-named environment variables replaced by ``[REDACTED]``.

    ``env`` defaults to ``os.environ``; pass a mapping to make the call pure.
    """
    return secret_scrubber(env)(text)


def secret_scrubber(env: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """A scrubber that reads the environment once, for scrubbing many strings in a row
    (reading ``os.environ`` costs more than the regexes)."""
    values = _env_secret_values(os.environ if env is None else env)

    def scrub(text: str) -> str:
        if not text:
            return text
        for value in values:
            text = text.replace(value, REDACTED)
        text = _KEY_RE.sub(REDACTED, text)
        text = _BEARER_RE.sub(lambda m: m.group(1) + REDACTED, text)
        return _ASSIGN_RE.sub(lambda m: m.group(1) + REDACTED, text)

    return scrub


def _env_secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of secret-named variables, longest first so a value that contains another
    is replaced whole."""
    values = {
        value
        for name, value in env.items()
        if name.upper().endswith(SECRET_ENV_SUFFIXES) and len(value) >= MIN_ENV_SECRET_LEN
    }
    return sorted(values, key=len, reverse=True)
