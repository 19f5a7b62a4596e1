"""A request to the local model and its result: plain data, no torch.

Kept apart from ``generate`` so the litellm provider can build requests without
importing torch (and without racing the worker thread's imports of it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agents.model import Message


@dataclass(frozen=True)
class GenRequest:
    """One chat request for the local model.

    ``adapter`` is an absolute adapter directory (already validated) or None.
    ``seed`` (with ``temperature > 0``) gives the row its own random generator, so the
    same request samples the same reply (up to float rounding when batched with others).
    ``on_delta``, if given, is called from the worker thread with successive pieces of
    the reply (text that can no longer be cut by a stop string); the pieces concatenate
    to the final text.
    """

    messages: Sequence[Message]
    max_tokens: int = 256
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    adapter: str | None = None
    on_delta: Callable[[str], None] | None = field(default=None, compare=False)

    @property
    def group_key(self) -> str | None:
        """Requests with equal keys may decode in one batch: the rows of a batch share
        one adapter. Temperatures and seeds are per row."""
        return self.adapter


@dataclass(frozen=True)
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (eos or a stop string) or "length"
