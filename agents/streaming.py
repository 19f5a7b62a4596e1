"""A ``ChatModel`` whose replies are streamed to a listener while they are written.

The loop's generator node calls ``complete``; wrapping the generator in
:class:`StreamingChatModel` lets a terminal show each reply token by token without the
node knowing. Every ``complete`` streams from the wrapped model (through its
``complete_streaming`` where it has one, so the usage figures stay exact) and hands
each piece to ``on_piece``; ``on_reply`` is called before each reply starts (the
generator may sample more than one reply per attempt).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from agents.model import ChatModel, Completion, GenerationParams, Message


class StreamingChatModel:
    """``inner`` with its replies streamed to ``on_piece``. Same ``model_id``."""

    def __init__(self, inner: ChatModel, on_piece: Callable[[str], None],
                 on_reply: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self._on_piece = on_piece
        self._on_reply = on_reply

    async def complete(
        self, messages: list[Message], params: GenerationParams | None = None
    ) -> Completion:
        if self._on_reply is not None:
            self._on_reply()
        streaming = getattr(self.inner, "complete_streaming", None)
        if streaming is not None:
            return await streaming(messages, params, on_piece=self._on_piece)
        # A ChatModel without complete_streaming: stream it; no usage figures.
        pieces = []
        async for piece in self.inner.stream(messages, params):
            pieces.append(piece)
            self._on_piece(piece)
        return Completion(text="".join(pieces), model=self.model_id,
                          adapter=(params or GenerationParams()).adapter)

    def stream(
        self, messages: list[Message], params: GenerationParams | None = None
    ) -> AsyncIterator[str]:
        return self.inner.stream(messages, params)
