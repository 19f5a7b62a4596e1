"""The embedded model: loaded once per process, served by one batching worker thread.

``get_engine(name)`` returns the process-wide engine for a ``local/...`` model (creating
it on first use); ``engine.submit(GenRequest)`` returns a ``concurrent.futures.Future``
of a ``GenResult``. Loading happens on the worker thread, so no caller blocks on it;
requests queue up meanwhile. The worker decodes with continuous batching
(``decode.DecodeBatch`` driven by ``batcher.Batcher``).

LoRA adapters are applied per request without reloading the base model: the model is
wrapped with peft once, each adapter directory is loaded under its own name, and every
forward of the running batch (whose rows share one adapter) selects its adapter or runs
with adapters disabled.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from agents.local.batcher import Batcher, BatchStats
from agents.local.resolve import ModelSource, resolve_local_model
from core.adapters import adapter_dir
from core.errors import ConfigError, ModelError

MAX_ADAPTERS = 8
"""Adapters kept loaded at once; the least recently used is unloaded beyond this."""


@dataclass
class BatchingConfig:
    """Batching knobs for engines created from now on (env overrides:
    ``SELFTAUGHT_LOCAL_MAX_BATCH``, ``SELFTAUGHT_LOCAL_GATHER_MS``,
    ``SELFTAUGHT_LOCAL_PREFIX_TOKENS``)."""

    max_batch_size: int = int(os.environ.get("SELFTAUGHT_LOCAL_MAX_BATCH", "32"))
    """Most rows decoding at once."""
    gather_ms: float = float(os.environ.get("SELFTAUGHT_LOCAL_GATHER_MS", "10"))
    """When idle, gathering ends once no request has arrived for this long. (While rows
    run, queued requests join between steps without waiting.)"""
    prefix_tokens: int = int(os.environ.get("SELFTAUGHT_LOCAL_PREFIX_TOKENS", "8192"))
    """Tokens of finished rows kept for reuse by prompts that start alike (0: off;
    about 46 KB per token for the embedded model)."""
    max_wait_ms: float = 1000.0
    """...or this long after the first request. Generous on purpose: a full garbage
    collection in a process holding torch and litellm pauses every thread for several
    hundred ms, and a short cap would then start a batch with half the requests that
    were on their way. On CPU a batch takes seconds, so the wait costs little."""


BATCHING = BatchingConfig()


@dataclass
class EngineStats:
    base_loads: int = 0
    adapter_loads: int = 0
    load_seconds: float = 0.0
    fast_lm_head: bool = False


class LocalEngine:
    """One model + tokenizer, owned by one worker thread. Build with ``from_source``
    (real weights, loaded on the worker) or ``from_loaded`` (tests, tiny models)."""

    def __init__(self, load: Callable[[], tuple], name: str, batching: BatchingConfig):
        self.name = name
        self._prefix_tokens = batching.prefix_tokens
        self._decode = None
        self.stats = EngineStats()
        self._load = load
        self._model = None
        self._tokenizer = None
        self._peft = None
        self._layers_enabled = True  # peft's adapter layers on (False: the base model)
        self._adapters: OrderedDict[tuple, str] = OrderedDict()
        self._batcher = Batcher(
            self._start,
            max_batch_size=batching.max_batch_size,
            gather_ms=batching.gather_ms,
            max_wait_ms=batching.max_wait_ms,
            name=f"selftaught-local-{name}",
            check=self._check_length,
        )

    @classmethod
    def from_source(cls, source: ModelSource, batching: BatchingConfig | None = None):
        return cls(lambda: _load_source(source), source.path.name, batching or BATCHING)

    @classmethod
    def from_loaded(cls, model, tokenizer, name="model", batching: BatchingConfig | None = None):
        return cls(lambda: (model, tokenizer), name, batching or BATCHING)

    @property
    def batch_stats(self) -> BatchStats:
        return self._batcher.stats

    @property
    def tokenizer(self):
        """The loaded tokenizer (None until the worker has loaded the model)."""
        return self._tokenizer

    @property
    def failed(self) -> bool:
        return self._batcher.failed

    def submit(self, request) -> Future:
        """Queue a ``GenRequest``; the future holds a ``GenResult`` or the error."""
        return self._batcher.submit(request)

    def close(self) -> None:
        self._batcher.close()

    def forget_prefixes(self) -> None:
        """Drop the stored prompt prefixes (benchmarks: a cold start). Call while no
        request is running."""
        if self._decode is not None:
            self._decode.prefixes.clear()

    # -- worker thread only ----------------------------------------------------------

    def _start(self):
        """Load the model; the decode batch the worker drives."""
        import time

        started = time.perf_counter()
        # One load at a time per process: concurrent first imports of transformers from
        # two threads can leave half-initialised modules behind.
        with _LOAD_LOCK:
            self._model, self._tokenizer = self._load()
            from agents.local.decode import DecodeBatch, eos_token_ids  # under the lock too
            from agents.local.fastpath import use_onednn_lm_head
        self._model.eval()
        self.stats.fast_lm_head = use_onednn_lm_head(self._model)
        self.stats.base_loads += 1
        self.stats.load_seconds = time.perf_counter() - started
        eos = eos_token_ids(self._model, self._tokenizer)
        self._decode = DecodeBatch(self._tokenizer, eos, self._selected, self._prefix_tokens)
        return self._decode

    def _check_length(self, request) -> BaseException | None:
        """A ``ModelError`` when the prompt and the reply it may write do not fit the
        model's context (prefill memory grows with the square of the prompt's length)."""
        from agents.local.decode import render_prompt

        limit = getattr(self._model.config, "max_position_embeddings", None)
        if not limit:
            return None
        tokens = len(self._tokenizer(render_prompt(self._tokenizer, request.messages),
                                     add_special_tokens=False)["input_ids"])
        if tokens + request.max_tokens <= limit:
            return None
        return ModelError(
            f"the prompt is {tokens} tokens and the reply may take {request.max_tokens}, but "
            f"local model {self.name} holds {limit}; shorten the prompt (or the task's "
            "lessons and hints), lower the reply's max_tokens, or use a model with a longer context")

    def _selected(self, adapter: str | None):
        """Context in which the returned model generates with ``adapter`` (or none).

        Entered around every forward, so it switches peft's state only when it changes:
        peft's own ``disable_adapter()`` context inspects every module on each use, which
        costs as much as a whole decode step of the embedded model."""
        if adapter is None and self._peft is None:
            return nullcontext(self._model)
        if adapter is not None:
            self._ensure_adapter(adapter)  # also makes it the active adapter
        if self._layers_enabled != (adapter is not None):
            if adapter is None:
                self._peft.base_model.disable_adapter_layers()
            else:
                self._peft.base_model.enable_adapter_layers()
            self._layers_enabled = adapter is not None
        return nullcontext(self._peft)

    def _ensure_adapter(self, path: str) -> str:
        """Load ``path`` once (wrapping the base with peft on first use), make it the
        active adapter, and return its peft name."""
        # Keyed by modification times too, so retraining into the same directory is seen.
        key = (path, *(_mtime(Path(path) / f) for f in _ADAPTER_FILES))
        if key in self._adapters:
            self._adapters.move_to_end(key)
            if self._peft.active_adapter != self._adapters[key]:  # called every step
                self._peft.set_adapter(self._adapters[key])
            return self._adapters[key]
        name = f"adapter{self.stats.adapter_loads}"  # peft names may not contain "."
        try:
            if self._peft is None:
                from peft import PeftModel

                self._peft = PeftModel.from_pretrained(self._model, path, adapter_name=name)
                self._layers_enabled = True
            else:
                self._peft.load_adapter(path, adapter_name=name)
        except Exception as e:
            raise ConfigError(
                f"LoRA adapter {path} could not be applied to local model {self.name}: "
                f"{type(e).__name__}: {e}. Was it trained for this base model?"
            ) from e
        self._peft.eval()
        self._peft.set_adapter(name)  # before evicting, so the active one never goes
        # Stored keys/values may come from an adapter directory retrained in place.
        self._decode.prefixes.clear()
        self.stats.adapter_loads += 1
        self._adapters[key] = name
        while len(self._adapters) > MAX_ADAPTERS:
            _, old = self._adapters.popitem(last=False)
            self._peft.delete_adapter(old)
        return name


_LOAD_LOCK = threading.Lock()
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _load_source(source: ModelSource) -> tuple:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.local.cache import ensure_converted

    directory = ensure_converted(source.path) if source.kind == "gguf" else source.path
    tokenizer = AutoTokenizer.from_pretrained(directory)
    # fp32: CPUs without native bf16 run half-precision matmuls far slower.
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def validate_adapter(adapter: str | None) -> str | None:
    """The adapter directory as an absolute path (None for no adapter); ``ConfigError``
    if it is not a PEFT adapter directory. Cheap: file-system checks only."""
    return None if adapter is None else str(adapter_dir(adapter))


_ENGINES: dict[str, LocalEngine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(name: str) -> LocalEngine:
    """The process-wide engine for ``local/NAME`` (prefix optional). Raises
    ``ConfigError`` at once if the model is not on disk. An engine whose start-up
    failed is replaced, so a fixed problem needs no restart."""
    source = resolve_local_model(name)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(source.key)
        if engine is None or engine.failed:
            engine = _ENGINES[source.key] = LocalEngine.from_source(source)
        return engine


def loaded_engines() -> dict[str, LocalEngine]:
    """A snapshot of the engines this process has created, by source key."""
    with _ENGINES_LOCK:
        return dict(_ENGINES)
