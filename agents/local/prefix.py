"""Keys and values of recently decoded token sequences, so a prompt that starts like one
of them prefills only the rest.

The loop's prompts repeat themselves: every generator prompt starts with the same
system turn, and a retry is the previous attempt's conversation plus a reply and a
retry turn. Prefill is compute-bound on a CPU, so not recomputing a shared prefix is
the cheapest speed-up there is.

Entries are per-layer ``(keys, values)`` of one sequence, shaped ``(1, heads, tokens,
head_dim)``, with rotary positions already applied from position 0, so any prompt that
starts with the same tokens can reuse a prefix of them as is.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence

import torch

Layers = list[tuple[torch.Tensor, torch.Tensor]]


class PrefixCache:
    """Least-recently-used entries, at most ``max_tokens`` tokens in all (0: off).
    Entries are per adapter (None: the base model): keys/values depend on it."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self._entries: OrderedDict[tuple[str | None, tuple[int, ...]], Layers] = OrderedDict()
        self._tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._tokens = 0

    def longest(
        self, adapter: str | None, tokens: Sequence[int], limit: int
    ) -> tuple[int, Layers | None]:
        """The longest stored prefix of ``tokens`` for ``adapter``, at most ``limit``
        tokens long, as ``(length, layers)``; ``(0, None)`` if none."""
        best, best_key = 0, None
        tokens = tuple(tokens)
        for key in self._entries:
            if key[0] != adapter:
                continue
            shared = len(os.path.commonprefix([key[1], tokens]))
            if shared > best:
                best, best_key = shared, key
        best = min(best, limit)
        if best_key is None or best == 0:
            return 0, None
        self._entries.move_to_end(best_key)
        layers = self._entries[best_key]
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in layers]

    def add(self, adapter: str | None, tokens: Sequence[int], layers: Layers) -> None:
        """Store ``layers`` (the keys/values of exactly ``tokens`` under ``adapter``)."""
        tokens = tuple(tokens)
        if not tokens or len(tokens) > self.max_tokens or (adapter, tokens) in self._entries:
            return
        for covered in [k for k in self._entries if k[0] == adapter and tokens[: len(k[1])] == k[1]]:
            del self._entries[covered]  # the new entry holds all of it
            self._tokens -= len(covered[1])
        self._entries[adapter, tokens] = layers
        self._tokens += len(tokens)
        while self._tokens > self.max_tokens:
            (_, old), _ = self._entries.popitem(last=False)
            self._tokens -= len(old)
