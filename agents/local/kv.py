"""A KV cache that appends in place, for decoding many rows at once.

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``,
which copies the whole cache every step, a large share of a decode step on a CPU when
many rows run at once. ``SpareLayer`` writes
into spare columns of a buffer instead and exposes the filled part as a view; the
buffer doubles when full, so copies are rare. Values are the same as a
``DynamicLayer``'s; only where they live differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

__all__ = ["SpareLayer", "spare_cache"]

SPARE_COLUMNS = 64
"""Free columns a layer starts with beyond what it holds (about 64 decode steps)."""


class SpareLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``keys``/``values`` are views of the first ``length``
    columns (axis -2) of larger buffers."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._key_buffer = key_states.new_empty((*key_states.shape[:-2], 0, key_states.shape[-1]))
        self._value_buffer = value_states.new_empty(
            (*value_states.shape[:-2], 0, value_states.shape[-1])
        )
        self.keys, self.values = self._key_buffer, self._value_buffer
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.keys.shape[-2]
        end = length + key_states.shape[-2]
        if end > self._key_buffer.shape[-2]:
            capacity = max(end + SPARE_COLUMNS, 2 * self._key_buffer.shape[-2])
            self._key_buffer = _grown(self.keys, capacity)
            self._value_buffer = _grown(self.values, capacity)
        self._key_buffer[..., length:end, :] = key_states
        self._value_buffer[..., length:end, :] = value_states
        self.keys = self._key_buffer[..., :end, :]
        self.values = self._value_buffer[..., :end, :]
        return self.keys, self.values

    def keep_rows(self, index: torch.Tensor, start: int) -> None:
        """Keep rows ``index`` from column ``start`` on, in one copy that keeps the
        spare columns (a row leaving the batch must not cost two copies of the cache)."""
        length = self.keys.shape[-2]
        self._key_buffer = self._key_buffer[index, :, start:]
        self._value_buffer = self._value_buffer[index, :, start:]
        self.keys = self._key_buffer[..., : length - start, :]
        self.values = self._value_buffer[..., : length - start, :]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.keep_rows(indices, 0)

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("repeat rows by building a new cache with spare_cache")


def spare_cache(layers: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()) -> Cache:
    """A cache of ``SpareLayer``s holding ``layers`` (one ``(keys, values)`` per model
    layer); empty: layers are added as the model first writes them."""
    if not layers:
        return Cache(layer_class_to_replicate=SpareLayer)
    filled = []
    for keys, values in layers:
        layer = SpareLayer()
        layer.update(keys, values)
        filled.append(layer)
    return Cache(layers=filled)


def _grown(tensor: torch.Tensor, capacity: int) -> torch.Tensor:
    """A buffer of ``capacity`` columns whose first columns hold ``tensor``."""
    buffer = tensor.new_empty((*tensor.shape[:-2], capacity, tensor.shape[-1]))
    buffer[..., : tensor.shape[-2], :] = tensor
    return buffer
