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
    def group_key(self) -> tuple:
        """Requests with equal keys may share one ``generate`` call. A call applies one
        adapter; temperatures may differ per row (``run_batch`` scales each row), so
        greedy and sampled requests share a batch. A seeded sampled request gets a call
        of its own seed, so its sample is reproducible."""
        if self.temperature > 0 and self.seed is not None:
            return ("seeded", float(self.temperature), self.seed, self.adapter)
        return ("shared", self.adapter)


@dataclass(frozen=True)
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (eos or a stop string) or "length"
