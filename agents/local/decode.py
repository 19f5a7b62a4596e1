"""Continuous batching: rows join and leave a running decode batch between steps.

``DecodeBatch`` holds the rows being decoded together, their shared KV cache and
attention mask. ``admit`` prefills new requests in one left-padded forward and merges
them into the running batch; ``step`` decodes one token for every row. A row that has
stopped (eos, stop string, ``max_tokens``) leaves at once, so short replies no longer
wait for the longest one and a freed slot can take a queued request on the next step.

Each row keeps its own temperature (0: argmax) and, if seeded, its own random
generator. Position ids are explicit (from each row's mask), so the left padding that
merging adds changes nothing: a row decodes as it would alone, up to float rounding.

The model is any transformers causal LM that takes ``past_key_values`` as a
``DynamicCache``, ``position_ids`` and ``logits_to_keep``. All rows use one adapter:
``select(adapter)`` is entered around every forward and yields the model to call with
that adapter (the engine's peft switching). ``DecodeBatch`` is the ``batcher.Stepper``
of the local engine; not thread-safe: one worker thread owns it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from transformers import DynamicCache

from agents.local.request import GenRequest, GenResult
from agents.local.rows import Row
from agents.model import Message

__all__ = ["DecodeBatch", "eos_token_ids", "render_prompt", "run_batch"]


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


Finished = list[tuple[Hashable, GenResult]]


class DecodeBatch:
    """The rows decoding together. ``admit`` and ``step`` return the rows that finished
    as ``(handle, GenResult)`` pairs (``handle``: whatever the caller passed in)."""

    def __init__(
        self,
        tokenizer,
        eos: Sequence[int],
        select: Callable[[str | None], AbstractContextManager],
    ):
        self.tokenizer = tokenizer
        self.eos = set(eos)
        self._select = select
        self.rows: list[Row] = []
        self.handles: list = []
        self._generators: list[torch.Generator | None] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # (rows, columns) 1 = real token
        self._positions: torch.Tensor | None = None  # (rows,) position of the next token
        self._last: torch.Tensor | None = None  # (rows,) the token to feed next

    def __len__(self) -> int:
        return len(self.rows)

    def clear(self) -> list:
        """Drop every row (after a failed forward); returns their handles."""
        handles = self.handles
        self.__init__(self.tokenizer, self.eos, self._select)
        return handles

    @torch.inference_mode()
    def admit(self, requests: Sequence[GenRequest], handles: Sequence) -> Finished:
        """Prefill ``requests`` together and add them to the batch. They must share
        one adapter, that of the rows already running."""
        adapters = {r.adapter for r in requests} | {r.request.adapter for r in self.rows}
        if len(adapters) != 1:
            raise ValueError(f"one adapter per decode batch, got {sorted(map(str, adapters))}")
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token (set one, e.g. its eos token)")
        self.tokenizer.padding_side = "left"  # the worker owns the tokenizer
        enc = self.tokenizer(
            [render_prompt(self.tokenizer, r.messages) for r in requests],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,  # the chat template already wrote any special tokens
        )
        with self._select(requests[0].adapter) as model:
            device = model.device
            mask = enc["attention_mask"].to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = DynamicCache()
            logits = model(
                input_ids=enc["input_ids"].to(device),
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1, :]
        prompt_tokens = mask.sum(dim=1)
        rows = [
            Row(self.tokenizer, r, self.eos, int(n)) for r, n in zip(requests, prompt_tokens)
        ]
        generators = [_generator(r, device) for r in requests]
        tokens = _sample(logits, rows, generators)
        self._merge(rows, list(handles), generators, cache, mask, prompt_tokens, tokens)
        return self._advance(tokens, first=len(self.rows) - len(rows))

    @torch.inference_mode()
    def step(self) -> Finished:
        """Decode one token for every row."""
        if not self.rows:
            return []
        ones = torch.ones_like(self._mask[:, :1])
        self._mask = torch.cat([self._mask, ones], dim=1)
        with self._select(self.rows[0].request.adapter) as model:
            logits = model(
                input_ids=self._last[:, None],
                attention_mask=self._mask,
                position_ids=self._positions[:, None],
                past_key_values=self._cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1, :]
        self._positions = self._positions + 1
        return self._advance(_sample(logits, self.rows, self._generators))

    # -- internals -------------------------------------------------------------------

    def _advance(self, tokens: torch.Tensor, first: int = 0) -> Finished:
        """Push each row's new token (rows from ``first`` on); drop the rows that
        finished and return them."""
        self._last = tokens if first == 0 else torch.cat([self._last[:first], tokens])
        finished, keep = [], list(range(first))
        for i, token in enumerate(tokens.tolist(), start=first):
            if self.rows[i].push(token):
                finished.append((self.handles[i], self.rows[i].result()))
            else:
                keep.append(i)
        if finished:
            self._keep(keep)
        return finished

    def _merge(self, rows, handles, generators, cache, mask, prompt_tokens, tokens) -> None:
        if not self.rows:
            self._cache, self._mask, self._positions = cache, mask, prompt_tokens
        else:  # left-pad the shorter side so both have the same columns, then stack
            width = max(self._mask.shape[1], mask.shape[1])
            stack = lambda old, new: torch.cat([_left_pad(old, width), _left_pad(new, width)])  # noqa: E731
            layers = [
                (stack(old_k, new_k), stack(old_v, new_v))
                for (old_k, old_v), (new_k, new_v) in zip(_kv(self._cache), _kv(cache))
            ]
            self._cache = DynamicCache(ddp_cache_data=layers)
            self._mask = torch.cat([_left_pad(self._mask, width), _left_pad(mask, width)])
            self._positions = torch.cat([self._positions, prompt_tokens])
        self.rows += rows
        self.handles += handles
        self._generators += generators

    def _keep(self, keep: list[int]) -> None:
        """Keep only rows ``keep``; drop mask columns that are padding in every row left."""
        self.rows = [self.rows[i] for i in keep]
        self.handles = [self.handles[i] for i in keep]
        self._generators = [self._generators[i] for i in keep]
        if not keep:
            self.clear()
            return
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask[index]
        start = int(mask.any(dim=0).nonzero()[0])
        self._mask = mask[:, start:]
        self._positions, self._last = self._positions[index], self._last[index]
        self._cache = DynamicCache(
            ddp_cache_data=[(k[index, :, start:], v[index, :, start:]) for k, v in _kv(self._cache)]
        )


def run_batch(model, tokenizer, requests: Sequence[GenRequest]) -> list[GenResult]:
    """Decode ``requests`` together from start to end (no rows join later); results in
    request order."""
    batch = DecodeBatch(tokenizer, eos_token_ids(model, tokenizer), lambda _: nullcontext(model))
    results: dict[int, GenResult] = dict(batch.admit(requests, range(len(requests))))
    while batch:
        results.update(batch.step())
    return [results[i] for i in range(len(requests))]


def _kv(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the sequence axis (-1 of a mask, -2 of keys/values) on the left."""
    axis = -1 if tensor.dim() == 2 else -2
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)


def _generator(request: GenRequest, device) -> torch.Generator | None:
    if request.temperature <= 0 or request.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(request.seed)


def _sample(logits: torch.Tensor, rows: Sequence[Row], generators) -> torch.Tensor:
    """One token per row: argmax for greedy rows, else a sample at the row's temperature
    (no top-k/top-p: the model's own generation config is deliberately ignored)."""
    tokens = logits.argmax(dim=-1)
    for i, row in enumerate(rows):
        temperature = row.request.temperature
        if temperature > 0:
            probs = torch.softmax(logits[i].float() / temperature, dim=-1)
            tokens[i] = torch.multinomial(probs, 1, generator=generators[i])[0]
    return tokens
