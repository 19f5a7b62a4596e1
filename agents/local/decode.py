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
``Cache``, ``position_ids`` and ``logits_to_keep``; the running batch's cache appends in
place (``kv.SpareLayer``) rather than copying itself every step. All rows use one adapter:
``select(adapter)`` is entered around every forward and yields the model to call with
that adapter (the engine's peft switching). ``DecodeBatch`` is the ``batcher.Stepper``
of the local engine; not thread-safe: one worker thread owns it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache

from agents.local.kv import spare_cache
from agents.local.prefix import PrefixCache
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

SHARE_MIN_TOKENS = 64
"""Prompt tokens an admission must save by prefilling its rows' common prefix once."""


@dataclass
class _Slot:
    row: Row
    handle: Hashable
    prompt: list[int]  # prompt token ids
    generator: torch.Generator | None  # a seeded row's own randomness


class DecodeBatch:
    """The rows decoding together. ``admit`` and ``step`` return the rows that finished
    as ``(handle, GenResult)`` pairs (``handle``: whatever the caller passed in).
    ``prefixes`` keeps finished rows' keys/values for later prompts that start alike
    (``prefix_tokens``: its size, 0 turns it off); ``prefill_tokens`` and
    ``reused_tokens`` count prompt tokens computed and taken from it."""

    def __init__(
        self,
        tokenizer,
        eos: Sequence[int],
        select: Callable[[str | None], AbstractContextManager],
        prefix_tokens: int = 0,
    ):
        self.tokenizer = tokenizer
        self.eos = set(eos)
        self.prefixes = PrefixCache(prefix_tokens)
        self.prefill_tokens = 0
        self.reused_tokens = 0
        self._select = select
        self._reset()

    def _reset(self) -> None:
        self._slots: list[_Slot] = []
        self._cache: Cache | None = None
        self._mask: torch.Tensor | None = None  # (rows, columns) 1 = real token
        self._positions: torch.Tensor | None = None  # (rows,) position of the next token
        self._last: torch.Tensor | None = None  # (rows,) the token to feed next

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def adapter(self) -> str | None:
        """The running rows' adapter (None: the base model, or no rows)."""
        return self._slots[0].row.request.adapter if self._slots else None

    def clear(self) -> list:
        """Drop every row (after a failed forward); returns their handles."""
        handles = [slot.handle for slot in self._slots]
        self._reset()
        return handles

    @torch.inference_mode()
    def admit(self, requests: Sequence[GenRequest], handles: Sequence) -> Finished:
        """Prefill ``requests`` together and add them to the batch. They must share
        one adapter, that of the rows already running."""
        adapters = {r.adapter for r in requests} | ({self.adapter} if self._slots else set())
        if len(adapters) != 1:
            raise ValueError(f"one adapter per decode batch, got {sorted(map(str, adapters))}")
        adapter = requests[0].adapter
        prompts = [
            self.tokenizer(render_prompt(self.tokenizer, r.messages), add_special_tokens=False)[
                "input_ids"
            ]  # no special tokens: the chat template already wrote any
            for r in requests
        ]
        with self._select(adapter) as model:
            device = model.device
            self._share_prefix(model, adapter, prompts)
            # Each row prefills only what no stored sequence of its adapter covers (at
            # least its last token, whose logits give the first reply token).
            hits = [self.prefixes.longest(adapter, p, limit=len(p) - 1) for p in prompts]
            cache, mask, inputs, positions = _prefill_inputs(prompts, hits, self._pad(), device)
            logits = model(
                input_ids=inputs,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1, :]
        self.reused_tokens += sum(n for n, _ in hits)
        self.prefill_tokens += sum(len(p) for p in prompts) - sum(n for n, _ in hits)
        slots = [
            _Slot(Row(self.tokenizer, r, self.eos, len(p)), h, p, _generator(r, device))
            for r, h, p in zip(requests, handles, prompts)
        ]
        tokens = _sample(logits, slots)
        first = len(self._slots)
        self._merge(slots, cache, mask, torch.tensor([len(p) for p in prompts], device=device))
        return self._advance(tokens, first=first)

    @torch.inference_mode()
    def step(self) -> Finished:
        """Decode one token for every row."""
        if not self._slots:
            return []
        ones = torch.ones_like(self._mask[:, :1])
        self._mask = torch.cat([self._mask, ones], dim=1)
        with self._select(self.adapter) as model:
            logits = model(
                input_ids=self._last[:, None],
                attention_mask=self._mask,
                position_ids=self._positions[:, None],
                past_key_values=self._cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1, :]
        self._positions = self._positions + 1
        return self._advance(_sample(logits, self._slots))

    # -- internals -------------------------------------------------------------------

    def _share_prefix(self, model, adapter: str | None, prompts: list[list[int]]) -> None:
        """Prefill and store the new rows' common prefix once, when that saves more
        than it costs (one extra forward: worth it from ~64 tokens saved)."""
        if not self.prefixes.max_tokens or len(prompts) < 2:
            return
        common = os.path.commonprefix(prompts)[: min(len(p) for p in prompts) - 1]
        if (len(prompts) - 1) * len(common) < SHARE_MIN_TOKENS:
            return
        if self.prefixes.longest(adapter, common, limit=len(common))[0] == len(common):
            return  # already stored
        cache = DynamicCache()  # stored as is, so no spare columns (kv.SpareLayer)
        model(
            input_ids=torch.tensor([common], device=model.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.prefill_tokens += len(common)
        self.prefixes.add(adapter, common, _kv(cache))

    def _pad(self) -> int:
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token (set one, e.g. its eos token)")
        return self.tokenizer.pad_token_id

    def _advance(self, tokens: torch.Tensor, first: int = 0) -> Finished:
        """Push each row's new token (rows from ``first`` on); drop the rows that
        finished, keeping their keys/values as a prefix, and return them."""
        self._last = tokens if first == 0 else torch.cat([self._last[:first], tokens])
        finished, keep = [], list(range(first))
        for i, token in enumerate(tokens.tolist(), start=first):
            slot = self._slots[i]
            if slot.row.push(token):
                finished.append((slot.handle, slot.row.result()))
                self._remember(i)
            else:
                keep.append(i)
        if finished:
            self._keep(keep)
        return finished

    def _remember(self, i: int) -> None:
        """Store row ``i``'s prompt and reply (all but the newest token, which is not
        in the cache yet) as a prefix."""
        if not self.prefixes.max_tokens:
            return
        slot = self._slots[i]
        columns = self._mask[i].nonzero().squeeze(1)
        layers = [(k[i : i + 1, :, columns], v[i : i + 1, :, columns]) for k, v in _kv(self._cache)]
        self.prefixes.add(slot.row.request.adapter, slot.prompt + slot.row.tokens[:-1], layers)

    def _merge(self, slots, cache, mask, positions) -> None:
        if not self._slots:
            self._cache, self._mask, self._positions = cache, mask, positions
        else:  # left-pad the shorter side so both have the same columns, then stack
            width = max(self._mask.shape[1], mask.shape[1])
            stack = lambda old, new: torch.cat([_left_pad(old, width), _left_pad(new, width)])  # noqa: E731
            layers = [
                (stack(old_k, new_k), stack(old_v, new_v))
                for (old_k, old_v), (new_k, new_v) in zip(_kv(self._cache), _kv(cache))
            ]
            self._cache = spare_cache(layers)
            self._mask = stack(self._mask, mask)
            self._positions = torch.cat([self._positions, positions])
        self._slots += slots

    def _keep(self, keep: list[int]) -> None:
        """Keep only rows ``keep``; drop mask columns that are padding in every row left."""
        if not keep:
            self._reset()
            return
        self._slots = [self._slots[i] for i in keep]
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask[index]
        start = int(mask.any(dim=0).nonzero()[0])
        self._mask = mask[:, start:]
        self._positions, self._last = self._positions[index], self._last[index]
        for layer in self._cache.layers:
            layer.keep_rows(index, start)


def _prefill_inputs(prompts, hits, pad: int, device):
    """The prefill call's cache, mask, input ids and position ids. Row i's columns:
    padding, its stored prefix (``hits[i]``: length and keys/values), padding, the rest
    of its prompt. Gaps are masked out; positions count real tokens only."""
    width = max(n for n, _ in hits)
    cache = spare_cache()
    if width:
        template = next(layers for _, layers in hits if layers is not None)
        blank = [(k[:, :, :0], v[:, :, :0]) for k, v in template]  # a row with no stored prefix
        rows = [
            [(_left_pad(k, width), _left_pad(v, width)) for k, v in (layers or blank)]
            for _, layers in hits
        ]
        cache = spare_cache([
            (torch.cat([r[j][0] for r in rows]), torch.cat([r[j][1] for r in rows]))
            for j in range(len(template))
        ])
    rest = [p[n:] for p, (n, _) in zip(prompts, hits)]
    length = max(len(r) for r in rest)
    inputs = torch.tensor([[pad] * (length - len(r)) + r for r in rest], device=device)
    new = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rest], device=device)
    old = torch.zeros(len(hits), width, dtype=new.dtype, device=device)
    for i, (n, _) in enumerate(hits):
        old[i, width - n :] = 1
    done = torch.tensor([n for n, _ in hits], device=device)
    positions = (done[:, None] + new.cumsum(-1) - 1).clamp(min=0)
    return cache, torch.cat([old, new], dim=1), inputs, positions


def run_batch(model, tokenizer, requests: Sequence[GenRequest]) -> list[GenResult]:
    """Decode ``requests`` together from start to end (no rows join later); results in
    request order."""
    batch = DecodeBatch(tokenizer, eos_token_ids(model, tokenizer), lambda _: nullcontext(model))
    results: dict[int, GenResult] = dict(batch.admit(requests, range(len(requests))))
    while batch:
        results.update(batch.step())
    return [results[i] for i in range(len(requests))]


def _kv(cache: Cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
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


def _sample(logits: torch.Tensor, slots: Sequence[_Slot]) -> torch.Tensor:
    """One token per row: argmax for greedy rows, else a sample at the row's temperature
    (no top-k/top-p: the model's own generation config is deliberately ignored). Rows
    without a seed sample in one call; a seeded row draws from its own generator."""
    tokens = logits.argmax(dim=-1)
    temperatures = [slot.row.request.temperature for slot in slots]
    shared = [i for i, slot in enumerate(slots) if temperatures[i] > 0 and slot.generator is None]
    if shared:
        index = torch.tensor(shared, device=logits.device)
        scale = torch.tensor([temperatures[i] for i in shared], device=logits.device)
        probs = torch.softmax(logits[index].float() / scale[:, None], dim=-1)
        tokens[index] = torch.multinomial(probs, 1).squeeze(1)
    for i, slot in enumerate(slots):
        if temperatures[i] > 0 and slot.generator is not None:
            probs = torch.softmax(logits[i].float() / temperatures[i], dim=-1)
            tokens[i] = torch.multinomial(probs, 1, generator=slot.generator)[0]
    return tokens
