"""The one seam for every model call.

Nodes, critics and trainers talk to a :class:`ChatModel`; none of them imports litellm.
The litellm-backed implementation lives in ``agents.litellm_model``; a scripted fake
that records its calls lives in ``agents.testing``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from core.records import Message

__all__ = ["ChatModel", "Completion", "GenerationParams", "Message", "Usage"]


class Usage(BaseModel):
    """Accounting for one call."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    faults: tuple[str, ...] = ()
    """Transient provider faults this call survived by retrying, one line each."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Completion(BaseModel):
    """What one call returned."""

    model_config = ConfigDict(frozen=True)

    text: str
    model: str
    adapter: str | None = None
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)


class GenerationParams(BaseModel):
    """Sampling settings for one call. ``temperature == 0`` means greedy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(256, ge=1)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    adapter: str | None = None
    """LoRA adapter to apply for this request (local provider: a directory; vLLM: a name)."""


@runtime_checkable
class ChatModel(Protocol):
    """A chat model. Implementations must be safe to call concurrently."""

    model_id: str

    async def complete(
        self, messages: list[Message], params: GenerationParams | None = None
    ) -> Completion:
        """Return the whole reply. Raises ``ModelError`` (or ``TransientModelError``
        once retries are spent)."""
        ...

    def stream(
        self, messages: list[Message], params: GenerationParams | None = None
    ) -> AsyncIterator[str]:
        """Yield the reply in pieces as they arrive."""
        ...
