"""A ``ChatModel`` that reports every call's usage: how a job's budget sees its spend.

Wrapping is transparent to callers (same ``model_id``, same replies, same errors); each
finished call hands its ``Usage`` (tokens, and litellm's cost for hosted models, 0 for
local ones) to ``on_usage``. A failed call has no usage to report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from agents.model import ChatModel, Completion, GenerationParams, Message, Usage


class MeteredChatModel:
    """``inner`` with every call's ``Usage`` passed to ``on_usage`` (which must be
    thread-safe: calls run concurrently)."""

    def __init__(self, inner: ChatModel, on_usage: Callable[[Usage], None]) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self._on_usage = on_usage

    async def complete(self, messages: list[Message], params: GenerationParams | None = None) -> Completion:
        completion = await self.inner.complete(messages, params)
        self._on_usage(completion.usage)
        return completion

    async def stream(self, messages: list[Message], params: GenerationParams | None = None) -> AsyncIterator[str]:
        # A stream does not report its usage, so a metered stream is one whole reply:
        # nothing may be spent unseen.
        completion = await self.complete(messages, params)
        yield completion.text
