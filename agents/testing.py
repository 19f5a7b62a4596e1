"""A scripted fake :class:`~agents.model.ChatModel` for unit tests of logic.

It answers from a script and records every call, so a test can assert what was
asked. It never touches the network. Scripted fakes prove logic, never a capability:
every capability also has a test with the real embedded model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

from agents.model import Completion, GenerationParams, Message, Usage

Reply = str | BaseException
Script = Iterable[Reply] | Callable[[list[Message], GenerationParams], Reply]


@dataclass
class RecordedCall:
    messages: list[Message]
    params: GenerationParams


@dataclass
class ScriptedChatModel:
    """Replies from ``script``: a sequence (consumed in order; an exception item is
    raised instead of returned) or a function of ``(messages, params)``.

    Running out of scripted replies raises ``AssertionError`` so a test cannot pass by
    accident.
    """

    script: Script
    model_id: str = "fake/scripted"
    calls: list[RecordedCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not callable(self.script):
            self._replies = iter(list(self.script))

    def _next_reply(self, messages: list[Message], params: GenerationParams) -> str:
        self.calls.append(RecordedCall([dict(m) for m in messages], params))
        if callable(self.script):
            reply = self.script(messages, params)
        else:
            try:
                reply = next(self._replies)
            except StopIteration:
                raise AssertionError(
                    f"ScriptedChatModel ran out of replies after {len(self.calls) - 1} calls"
                ) from None
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def complete(
        self, messages: list[Message], params: GenerationParams | None = None
    ) -> Completion:
        params = params or GenerationParams()
        text = self._next_reply(messages, params)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        return Completion(
            text=text,
            model=self.model_id,
            adapter=params.adapter,
            finish_reason="stop",
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(text.split())),
        )

    async def stream(
        self, messages: list[Message], params: GenerationParams | None = None
    ) -> AsyncIterator[str]:
        completion = await self.complete(messages, params)
        for word in completion.text.split(" "):
            yield word + " "
