"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import build_tiny_base


@pytest.fixture(scope="module")
def one_thread():
    import torch

    # Two OpenMP threads on a shared 2-core machine can be 100x slower for tiny ops
    # (each barrier waits for a descheduled thread); one thread is fast and predictable.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A saved tiny Llama + tokenizer with a ChatML template (built once per session)."""
    return build_tiny_base(tmp_path_factory.mktemp("tiny-base"))
