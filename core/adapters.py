"""What counts as a LoRA adapter directory: the one check every layer uses (the local
engine before loading one, training before continuing one, the registry before
resolving one)."""

from __future__ import annotations

from pathlib import Path

from core.errors import ConfigError

ADAPTER_CONFIG = "adapter_config.json"
"""The file peft's ``save_pretrained`` writes into every adapter directory."""


def adapter_dir(path: str | Path, *, fix: str = "list trained adapters with "
                "`selftaught adapters list`") -> Path:
    """``path`` as an absolute directory, or ``ConfigError`` (ending with ``fix``) when
    it is not a PEFT adapter directory. File-system checks only."""
    directory = Path(path).expanduser()
    if not (directory / ADAPTER_CONFIG).is_file():
        raise ConfigError(
            f"{path} is not a LoRA adapter directory (no {ADAPTER_CONFIG}, as peft's "
            f"save_pretrained writes); check the path, or {fix}")
    return directory.resolve()
