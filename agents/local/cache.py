"""A converted copy of a GGUF model, so only the first process pays for conversion.

Loading a GGUF file with transformers converts the tokenizer and de-quantizes every
tensor (about a minute on a laptop CPU). We save the result once as a plain Hugging Face
directory (``config.json``, ``model.safetensors``, tokenizer files) keyed by the GGUF's
sha256, so a cached copy can never be stale, and later processes load it in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from core.files import write_atomic

CONVERTED_MARKER = "selftaught-converted.json"


def cache_root() -> Path:
    """``$SELFTAUGHT_CACHE``, else ``$XDG_CACHE_HOME/selftaught``, else
    ``~/.cache/selftaught``. Not created here."""
    if os.environ.get("SELFTAUGHT_CACHE"):
        return Path(os.environ["SELFTAUGHT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "selftaught"
    return Path.home() / ".cache" / "selftaught"


def file_sha256(path: Path) -> str:
    """The file's sha256 hex digest, remembered in a sidecar keyed by (path, size,
    mtime) so an unchanged file is hashed once per machine, not once per process."""
    stat = path.stat()
    identity = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    sidecar = (
        cache_root() / "hashes" / (hashlib.sha1(str(path).encode()).hexdigest() + ".json")
    )
    try:
        saved = json.loads(sidecar.read_text())
        if {k: saved.get(k) for k in identity} == identity and len(saved["sha256"]) == 64:
            return saved["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no sidecar yet, or a torn/old one: hash again
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    sha = digest.hexdigest()
    try:
        write_atomic(sidecar, json.dumps({**identity, "sha256": sha}))
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return sha


def converted_dir(gguf: Path) -> Path:
    """Where the converted copy of ``gguf`` lives (it may not exist yet)."""
    return cache_root() / "models" / file_sha256(gguf)


def is_converted(directory: Path) -> bool:
    """True when ``directory`` holds a complete conversion (the marker is written last,
    and the directory only appears by an atomic rename anyway)."""
    return (directory / CONVERTED_MARKER).is_file()


def ensure_converted(gguf: Path) -> Path:
    """Return a Hugging Face directory equivalent to ``gguf``, converting it first if no
    process has done so yet. Concurrent converters race harmlessly: each writes a
    private temp dir and the first rename wins."""
    target = converted_dir(gguf)
    if is_converted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        _convert(gguf, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_converted(target):  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer.save_pretrained(out)
    # save_pretrained refuses a GGUF-loaded model ("quantized with gguf and is not
    # serializable") although its weights are already plain fp32 tensors. So we write
    # the config without the quantization entry and the weights ourselves; save_model
    # drops the tied lm_head copy that save_file would reject.
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    model.generation_config.save_pretrained(out)
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    marker = {"source": str(gguf), "sha256": file_sha256(gguf)}
    (out / CONVERTED_MARKER).write_text(json.dumps(marker, indent=2))
