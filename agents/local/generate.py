"""One batched ``generate`` call for requests that share an adapter.

Pure apart from the model call: takes a model and tokenizer, returns one result per
request. The batcher decides which requests go together (see ``GenRequest.group_key``);
this module only has to make a left-padded batch behave like separate calls: each row
has its own temperature (greedy rows stay greedy), stops on its own eos, stop string or
``max_tokens``, and the whole call ends as soon as every row has stopped.

Mixed temperatures matter to the loop: first attempts, critiques and hints are greedy
while retries are sampled hotter; batched apart they would run in small serial groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from agents.local.request import GenRequest, GenResult
from agents.model import Message

__all__ = ["GenRequest", "GenResult", "eos_token_ids", "render_prompt", "run_batch"]


def render_prompt(tokenizer, messages: Sequence[Message]) -> str:
    """The model's chat template with the assistant turn opened; a plain transcript
    for models that ship no template."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a reply: the generation config's eos ids and the tokenizer's."""
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if value is None:
            continue
        for token_id in value if isinstance(value, (list, tuple)) else [value]:
            if token_id not in ids:
                ids.append(int(token_id))
    return ids


def run_batch(model, tokenizer, requests: Sequence[GenRequest]) -> list[GenResult]:
    """Generate replies for ``requests`` (same ``group_key``) in one left-padded call."""
    if len({r.group_key for r in requests}) != 1:
        raise ValueError("run_batch needs requests with one group_key")
    first = requests[0]
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    tokenizer.padding_side = "left"  # the worker owns the tokenizer; left so rows end together
    enc = tokenizer(
        [render_prompt(tokenizer, r.messages) for r in requests],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,  # the chat template already wrote any special tokens
    )
    rows = _Rows(tokenizer, requests, set(eos))
    temperatures = [r.temperature for r in requests]
    if first.temperature > 0 and first.seed is not None:
        torch.manual_seed(first.seed)
    if len(set(temperatures)) == 1:
        sampling = _sampling_kwargs(first.temperature)
    else:  # sample every row, each from its own temperature (0: its argmax)
        sampling = _sampling_kwargs(1.0)
        sampling["logits_processor"] = LogitsProcessorList([_RowTemperature(temperatures)])
    with torch.inference_mode():
        model.generate(
            input_ids=enc["input_ids"].to(model.device),
            attention_mask=enc["attention_mask"].to(model.device),
            max_new_tokens=max(r.max_tokens for r in requests),
            **sampling,
            pad_token_id=pad,
            eos_token_id=eos,
            stopping_criteria=StoppingCriteriaList([rows]),
        )
    prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
    return rows.finish(prompt_tokens)


def _sampling_kwargs(temperature: float) -> dict:
    # Explicit neutral values: generate() fills unset ones from the model's own
    # generation config, which may carry top_p/top_k/repetition tweaks. (Greedy gets no
    # top_k/top_p: transformers warns about them when not sampling.)
    if temperature > 0:
        return dict(
            do_sample=True, temperature=temperature, top_k=0, top_p=1.0, repetition_penalty=1.0
        )
    return dict(do_sample=False, repetition_penalty=1.0)


class _RowTemperature(LogitsProcessor):
    """Divides each row's logits by its temperature; a greedy row (0) keeps only its
    highest logit, so sampling it returns the argmax, as greedy decoding would."""

    def __init__(self, temperatures: Sequence[float]):
        self.temperatures = list(temperatures)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        temps = torch.tensor(self.temperatures, dtype=scores.dtype, device=scores.device)
        greedy = temps <= 0
        scaled = scores / torch.where(greedy, torch.ones_like(temps), temps).unsqueeze(1)
        if greedy.any():
            best = scores.argmax(dim=-1, keepdim=True)
            one_hot = torch.full_like(scores, float("-inf")).scatter(1, best, 0.0)
            scaled = torch.where(greedy.unsqueeze(1), one_hot, scaled)
        return scaled


class _Rows(StoppingCriteria):
    """Per-row bookkeeping, called by ``generate`` after every step: records each
    row's tokens until it stops, streams safe text, and tells ``generate`` which rows
    are done (it pads those and returns once all are)."""

    def __init__(self, tokenizer, requests: Sequence[GenRequest], eos: set[int]):
        self.tokenizer = tokenizer
        self.requests = requests
        self.eos = eos
        n = len(requests)
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.reason: list[str | None] = [None] * n
        self.emitted = [0] * n
        # A stream may not show text a later token could turn into a stop string.
        self.hold = [max((len(s) for s in r.stop), default=1) - 1 for r in requests]

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        for i, token in enumerate(input_ids[:, -1].tolist()):
            if self.reason[i] is None:
                self._step(i, token)
        return torch.tensor([r is not None for r in self.reason], device=input_ids.device)

    def _step(self, i: int, token: int) -> None:
        request = self.requests[i]
        self.tokens[i].append(token)
        if token in self.eos:
            self.reason[i] = "stop"
            return
        if request.stop or request.on_delta:
            text = self._text(i)
            if request.stop and _cut(text, request.stop) is not None:
                self.reason[i] = "stop"
                return
            if request.on_delta:
                self._emit(i, text, len(text) - self.hold[i])
        if len(self.tokens[i]) >= request.max_tokens:
            self.reason[i] = "length"

    def _text(self, i: int) -> str:
        return self.tokenizer.decode(
            self.tokens[i], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def _emit(self, i: int, text: str, end: int, final: bool = False) -> None:
        if not final and end > 0 and text[end - 1] == "\ufffd":
            end -= 1  # maybe half a UTF-8 character: wait for the next token
        # Byte-level BPE decoding is prefix-stable, so pieces sent earlier stay a prefix
        # of the final text and only the new tail is sent.
        if end > self.emitted[i]:
            piece, self.emitted[i] = text[self.emitted[i] : end], end
            try:
                self.requests[i].on_delta(piece)
            except Exception:
                pass  # a consumer that went away must not break the batch

    def finish(self, prompt_tokens: list[int]) -> list[GenResult]:
        results = []
        for i, request in enumerate(self.requests):
            text = self._text(i)
            cut = _cut(text, request.stop)
            if cut is not None:
                text = text[:cut]
            if request.on_delta:
                self._emit(i, text, len(text), final=True)
            results.append(
                GenResult(
                    text=text,
                    prompt_tokens=int(prompt_tokens[i]),
                    completion_tokens=len(self.tokens[i]),
                    finish_reason=self.reason[i] if self.reason[i] else "length",
                )
            )
        return results


def _cut(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    hits = [text.find(s) for s in stops if s]
    hits = [h for h in hits if h >= 0]
    return min(hits) if hits else None
