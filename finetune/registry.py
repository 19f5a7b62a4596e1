"""The adapter registry: trained LoRA adapters under ``<data home>/adapters/``.

Layout::

    adapters/
      registry.json          the index: every listed adapter's manifest (the truth)
      a0001/                 one PEFT adapter directory per name
        adapter_config.json
        adapter_model.safetensors
        manifest.json        a copy of the adapter's manifest, for people and tools
      a0002/ ...

Crash safety: an adapter directory is written in full under a temporary name, then
renamed into place, and only then does the index list it; the index is replaced
atomically (temp file + ``os.replace``). So a crash at any point leaves either the old
registry or the new one, never an index naming a half-written adapter. A directory the
index does not list is an orphan of such a crash: it is ignored, and replaced by the
next ``add`` under that name.

Status changes (``promote``, ``rollback``, ``set_eval``) rewrite the index in one
replace, so the champion is always exactly one adapter or none. Writers in several
processes are serialized by a lock file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.adapters import adapter_dir
from core.errors import ConfigError, StoreError
from core.files import write_atomic
from finetune.dataset import DatasetManifest

ADAPTERS_DIR = "adapters"
INDEX_FILE = "registry.json"
MANIFEST_FILE = "manifest.json"
REGISTRY_VERSION = 1
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
RESERVED_NAMES = ("champion", "none")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_AUTO_NAME = re.compile(r"^a(\d+)$")

AdapterStatus = Literal["candidate", "champion", "retired"]


class AdapterManifest(BaseModel):
    """Everything known about one adapter: provenance, training, evaluation, status."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = REGISTRY_VERSION
    name: str
    base_model: str
    """The base model id the adapter applies to (e.g. ``local/smollm2``)."""
    method: str
    """How it was trained: ``sft``, ``dpo`` or ``sft+dpo``."""
    dataset: DatasetManifest | None = None
    """The training data: file hash, trajectory ids, counts per family."""
    hyper: dict[str, Any] = Field(default_factory=dict)
    """Training hyper-parameters (``TrainConfig`` as a dict)."""
    started_from: str | None = None
    """The adapter whose weights training continued, whose LoRA rank, alpha and modules
    apply rather than ``hyper``'s (None: a new adapter on the base model)."""
    train_loss: float | None = None
    tokens_per_s: float | None = None
    train_seconds: float | None = None
    evaluation: dict[str, Any] = Field(default_factory=dict)
    """Evaluation results by suite or key (e.g. ``{"holdout": {"pass_at_1": 0.6}}``)."""
    status: AdapterStatus = "candidate"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    promoted_at: datetime | None = None
    """When it last became champion."""
    previous_champion: str | None = None
    """The champion it replaced when promoted; what ``rollback`` restores."""

    @classmethod
    def from_training(
        cls, name: str, base_model: str, dataset: DatasetManifest | None, result: Any,
        started_from: str | None = None,
    ) -> AdapterManifest:
        """A candidate's manifest from a ``finetune.train.TrainResult``."""
        return cls(
            name=name, base_model=base_model, method=result.method, dataset=dataset,
            hyper=result.hyper.model_dump(mode="json"), started_from=started_from,
            train_loss=result.loss,
            tokens_per_s=result.tokens_per_s, train_seconds=result.seconds,
        )


class ResolvedAdapter(BaseModel):
    """An ``--adapter`` choice made concrete: what to report and what to load."""

    model_config = ConfigDict(frozen=True)

    label: str
    """``none`` (the base model), a registered name, or the directory as given."""
    path: Path | None
    """The adapter directory to load (absolute), or None for the base model."""


class AdapterRegistry:
    """The adapters under ``home / "adapters"`` (``home`` is the data directory)."""

    def __init__(self, home: Path | str) -> None:
        self.root = Path(home).expanduser() / ADAPTERS_DIR
        self.index_path = self.root / INDEX_FILE

    # -- reading ---------------------------------------------------------------------------

    def list(self) -> list[AdapterManifest]:
        """Every listed adapter, oldest first."""
        return sorted(self._read().values(), key=lambda m: (m.created_at, m.name))

    def get(self, name: str) -> AdapterManifest:
        """The manifest of ``name``; an unknown name is ``ConfigError`` listing the names."""
        return self._known(self._read(), name)

    def champion(self) -> AdapterManifest | None:
        """The current champion, or None when no adapter has been promoted."""
        return next((m for m in self._read().values() if m.status == "champion"), None)

    def path(self, name: str) -> Path:
        """The adapter directory of ``name`` (``ConfigError`` if unknown, or missing or
        incomplete on disk)."""
        manifest = self.get(name)
        problem = self.problem(name)
        if problem:
            other = ("choose another champion with `selftaught adapters rollback` (the one it "
                     "replaced, or the base model) or `selftaught adapters promote NAME`"
                     if manifest.status == "champion" else "use another adapter")
            raise ConfigError(f"adapter {name}: {problem}; retrain adapter {name} or restore its "
                              f"directory, or {other}")
        return adapter_dir(self.root / name)

    def problem(self, name: str) -> str | None:
        """What is wrong with listed adapter ``name``'s directory (deleted, or missing a
        PEFT file), or None when it is whole. File-system checks only."""
        directory = self.root / name
        if not directory.is_dir():
            return f"its directory {directory} is missing"
        absent = [f for f in ADAPTER_FILES if not (directory / f).is_file()]
        if absent:
            return f"its directory {directory} lacks {', '.join(absent)}"
        return None

    def resolve(self, name: str | None, generator: str) -> ResolvedAdapter:
        """The adapter that ``--adapter NAME|champion|none|PATH`` means for ``generator``
        (a model id). The one place that answers "which adapter?":

        * ``none`` (or None): no adapter, the base model.
        * ``champion``: the champion when there is one trained on ``generator``; else no
          adapter (the base model is then the incumbent).
        * a registered name: that adapter; ``ConfigError`` when it was trained on another
          base model.
        * a PEFT adapter directory on disk: that directory, as given.

        Anything else is ``ConfigError`` listing the registered names."""
        key = (name or "none").strip()
        if key.lower() == "none":
            return ResolvedAdapter(label="none", path=None)
        index = self._read()
        if key.lower() == "champion":
            champion = next((m for m in index.values() if m.status == "champion"), None)
            if champion is None or champion.base_model != generator:
                return ResolvedAdapter(label="none", path=None)
            return ResolvedAdapter(label=champion.name, path=self.path(champion.name))
        if key in index:
            if index[key].base_model != generator:
                raise ConfigError(
                    f"adapter {key} was trained on {index[key].base_model}, but the generator is "
                    f"{generator}; use --model {index[key].base_model} or another adapter")
            return ResolvedAdapter(label=key, path=self.path(key))
        if Path(key).expanduser().is_dir():
            return ResolvedAdapter(label=key, path=adapter_dir(key))
        names = ", ".join(sorted(index)) or "none yet"
        raise ConfigError(f"adapter {key!r} not found: give a registered name ({names}), "
                          "champion, none, or a PEFT adapter directory")

    def next_name(self) -> str:
        """The next free automatic name: ``a0001``, ``a0002``, ... (one past the highest)."""
        numbers = [int(m.group(1)) for n in self._read() if (m := _AUTO_NAME.match(n))]
        return f"a{max(numbers, default=0) + 1:04d}"

    # -- writing ---------------------------------------------------------------------------

    def add(self, name: str, adapter_dir: Path | str, manifest: AdapterManifest) -> AdapterManifest:
        """Move the trained PEFT directory ``adapter_dir`` into the registry as ``name``
        (status ``candidate``) and return the stored manifest.

        The directory is moved in and completed under a temporary name, renamed to
        ``name``, and only then listed in the index. A name already listed, a reserved or
        unsafe name, or a directory without the PEFT files is ``ConfigError``."""
        check_name(name)
        source = Path(adapter_dir).expanduser()
        missing = [f for f in ADAPTER_FILES if not (source / f).is_file()]
        if missing:
            raise ConfigError(
                f"{source} is not a trained adapter (missing {', '.join(missing)}); "
                "train one with `selftaught distill`"
            )
        manifest = manifest.model_copy(
            update={"name": name, "status": "candidate", "promoted_at": None,
                    "previous_champion": None}
        )
        with self._lock():
            index = self._read()
            if name in index:
                raise ConfigError(f"adapter {name} already exists; pick another name")
            self._sweep_temporaries()
            staging = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
            staged = staging / "adapter"
            try:
                shutil.move(str(source), str(staged))
                _write_json(staged / MANIFEST_FILE, manifest.model_dump(mode="json"))
                target = self.root / name
                if target.exists():  # an orphan: renamed in, but a crash kept it off the index
                    shutil.rmtree(target)
                os.rename(staged, target)
            except BaseException:
                if staged.is_dir() and not source.exists():  # give the trained adapter back
                    shutil.move(str(staged), str(source))
                raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            index[name] = manifest
            self._write(index)  # its manifest.json was written before the rename
        return manifest

    def promote(self, name: str) -> AdapterManifest:
        """Make ``name`` the champion; the old champion becomes ``retired`` and is
        remembered as ``previous_champion``. Promoting the champion changes nothing."""
        with self._lock():
            index = self._read()
            new = self._known(index, name)
            if new.status == "champion":
                return new
            old = next((m for m in index.values() if m.status == "champion"), None)
            if old is not None:
                index[old.name] = old.model_copy(update={"status": "retired"})
            index[name] = new.model_copy(update={
                "status": "champion", "promoted_at": datetime.now(UTC),
                "previous_champion": old.name if old else None,
            })
            self._write(index, (name, old.name) if old else (name,))
            return index[name]

    def rollback(self) -> AdapterManifest:
        """Retire the champion and restore the one it replaced; returns the restored
        champion. ``ConfigError`` when there is no champion or nothing it replaced."""
        with self._lock():
            index = self._read()
            current = next((m for m in index.values() if m.status == "champion"), None)
            if current is None:
                raise ConfigError("nothing to roll back: no adapter is champion")
            previous = current.previous_champion
            if previous is None or previous not in index:
                raise ConfigError(
                    f"nothing to roll back to: champion {current.name} did not replace another "
                    "adapter; use `selftaught adapters promote NAME` to choose one"
                )
            index[current.name] = current.model_copy(update={"status": "retired"})
            # Its own previous_champion stays, so a second rollback walks further back.
            index[previous] = index[previous].model_copy(
                update={"status": "champion", "promoted_at": datetime.now(UTC)}
            )
            self._write(index, (current.name, previous))
            return index[previous]

    def retire(self, name: str) -> AdapterManifest:
        """Set ``name``'s status to ``retired``; retiring the champion leaves none (runs
        use the base model until another is promoted)."""
        with self._lock():
            index = self._read()
            index[name] = self._known(index, name).model_copy(update={"status": "retired"})
            self._write(index, (name,))
            return index[name]

    def set_eval(self, name: str, results: dict[str, Any]) -> AdapterManifest:
        """Merge ``results`` into the adapter's ``evaluation`` (same keys are replaced)."""
        with self._lock():
            index = self._read()
            manifest = self._known(index, name)
            index[name] = manifest.model_copy(
                update={"evaluation": {**manifest.evaluation, **results}}
            )
            self._write(index, (name,))
            return index[name]

    # -- internals -------------------------------------------------------------------------

    def _known(self, index: dict[str, AdapterManifest], name: str) -> AdapterManifest:
        if name not in index:
            names = ", ".join(sorted(index)) or "none yet"
            raise ConfigError(
                f"unknown adapter {name!r}; adapters: {names} "
                "(`selftaught adapters list` shows them)"
            )
        return index[name]

    def _read(self) -> dict[str, AdapterManifest]:
        try:
            raw = json.loads(self.index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"adapter registry {self.index_path} is unreadable: {exc}") from exc
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        if version != REGISTRY_VERSION:
            raise StoreError(
                f"adapter registry {self.index_path} has schema version {version!r}; this "
                f"selftaught reads version {REGISTRY_VERSION}. Upgrade selftaught."
            )
        try:
            return {n: AdapterManifest.model_validate(m) for n, m in raw["adapters"].items()}
        except (KeyError, AttributeError, ValidationError) as exc:
            raise StoreError(f"adapter registry {self.index_path} is damaged: {exc}") from exc

    def _write(self, index: dict[str, AdapterManifest], changed: tuple[str, ...] = ()) -> None:
        """Replace the index atomically, then refresh the ``changed`` adapters' manifest
        copies (a crash between the two only leaves a stale copy; the index is the truth)."""
        data = {
            "schema_version": REGISTRY_VERSION,
            "adapters": {n: m.model_dump(mode="json") for n, m in sorted(index.items())},
        }
        _write_json(self.index_path, data)
        for name in changed:
            if (self.root / name).is_dir():
                copy = index[name].model_dump(mode="json")
                with contextlib.suppress(OSError):
                    _write_json(self.root / name / MANIFEST_FILE, copy)

    def _sweep_temporaries(self) -> None:
        # Called under the lock, so no live writer owns a staging directory.
        for leftover in self.root.glob(".tmp-*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialize writers across processes (an flock on ``adapters/.lock``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: single-writer use only
            yield
            return
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def check_name(name: str) -> None:
    """``ConfigError`` unless ``name`` is a valid, unreserved adapter name."""
    if name.lower() in RESERVED_NAMES or not _NAME.match(name):
        raise ConfigError(
            f"invalid adapter name {name!r}: use letters, digits, '.', '_' or '-' (up to 64, "
            f"not starting with a symbol), and not {' or '.join(RESERVED_NAMES)}"
        )


def _write_json(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically: a temp file beside it, fsync, ``os.replace``."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")
