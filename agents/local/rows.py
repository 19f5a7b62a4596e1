"""One reply being decoded: its tokens so far, when it stops, what it has streamed.

Pure Python (a tokenizer is the only dependency), so the stop and streaming rules are
unit-tested without a model. ``decode.DecodeBatch`` keeps one ``Row`` per request.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.local.request import GenRequest, GenResult


class Row:
    """Feed it each generated token with ``push``; it says when the reply is over (its
    own eos, a stop string or ``max_tokens``) and streams text that no later token can
    turn into a stop string."""

    def __init__(self, tokenizer, request: GenRequest, eos: set[int], prompt_tokens: int):
        self.tokenizer = tokenizer
        self.request = request
        self.eos = eos
        self.prompt_tokens = prompt_tokens
        self.tokens: list[int] = []
        self.reason: str | None = None
        self._emitted = 0
        # A stream may not show text a later token could turn into a stop string.
        self._hold = max((len(s) for s in request.stop), default=1) - 1

    def push(self, token: int) -> bool:
        """Record one generated token; True once the reply is over."""
        request = self.request
        self.tokens.append(token)
        if token in self.eos:
            self.reason = "stop"
            return True
        if request.stop or request.on_delta:
            text = self._text()
            if request.stop and cut_at_stop(text, request.stop) is not None:
                self.reason = "stop"
                return True
            if request.on_delta:
                self._emit(text, len(text) - self._hold)
        if len(self.tokens) >= request.max_tokens:
            self.reason = "length"
        return self.reason is not None

    def result(self) -> GenResult:
        """The reply, cut at its first stop string; streams whatever was held back."""
        text = self._text()
        cut = cut_at_stop(text, self.request.stop)
        if cut is not None:
            text = text[:cut]
        if self.request.on_delta:
            self._emit(text, len(text), final=True)
        return GenResult(
            text=text,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(self.tokens),
            finish_reason=self.reason or "length",
        )

    def _text(self) -> str:
        return self.tokenizer.decode(
            self.tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def _emit(self, text: str, end: int, final: bool = False) -> None:
        if not final and end > 0 and text[end - 1] == "\ufffd":
            end -= 1  # maybe half a UTF-8 character: wait for the next token
        # Byte-level BPE decoding is prefix-stable, so pieces sent earlier stay a prefix
        # of the final text and only the new tail is sent.
        if end > self._emitted:
            piece, self._emitted = text[self._emitted : end], end
            try:
                self.request.on_delta(piece)
            except Exception:
                pass  # a consumer that went away must not break the batch


def cut_at_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    hits = [text.find(s) for s in stops if s]
    hits = [h for h in hits if h >= 0]
    return min(hits) if hits else None
