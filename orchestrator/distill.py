"""``selftaught distill``: verified trajectories -> training dataset -> LoRA adapter,
registered as a candidate.

The dataset file stays under ``<home>/datasets/NAME.jsonl`` beside the adapter's
manifest (which records its hash), so every adapter can be traced to its data.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from agents.local.resolve import is_local
from core.errors import ConfigError
from core.leakage import prompt_hashes
from finetune.dataset import build_rows, gold_rows, write_dataset
from finetune.registry import AdapterManifest, AdapterRegistry, check_name
from finetune.settings import Method
from core.records import Task, Trajectory
from memory.store import TrajectoryStore
from orchestrator.config import Config

DATASETS_DIR = "datasets"
SCRATCH_PREFIX = ".train-"
"""Training works in ``<adapters>/.train-NAME-PID-*`` and renames the result into place;
the registry never lists these."""


def collect_trajectories(store: TrajectoryStore, run_ids: Sequence[str] | None) -> list[Trajectory]:
    """Every stored trajectory, or those of ``run_ids`` (each must exist)."""
    if run_ids is None:
        return store.trajectories()
    found: list[Trajectory] = []
    for run_id in run_ids:
        store.get_run(run_id)  # ConfigError naming an unknown run
        found.extend(store.trajectories(run_id=run_id))
    return found


def trainable_base(config: Config) -> str:
    """The generator's model id, which distillation trains; ``ConfigError`` unless it
    is a local model (weights on disk)."""
    base_model = config.models.generator
    if not is_local(base_model):
        raise ConfigError(
            f"distill trains the local generator, but models.generator is {base_model!r}; "
            "set --model / models.generator to local/smollm2 or local/<model directory>")
    return base_model


def distill(
    config: Config,
    trajectories: Iterable[Trajectory],
    *,
    name: str | None = None,
    method: Method | None = None,
    exclude: Iterable[Task] = (),
    callbacks: Sequence[Any] = (),
    gold: Iterable[Task] = (),
) -> AdapterManifest:
    """Train a LoRA adapter for ``config.models.generator`` on the verified ones among
    ``trajectories`` and add it to the registry as a candidate named ``name`` (default:
    the next free ``aNNNN``).

    With ``distill.start = "champion"`` and a champion, training continues the
    champion's adapter (which stays as it was) instead of starting a new one.

    ``gold`` are tasks whose own worked solution or answer becomes an SFT row each
    (label ``gold``, see ``finetune.dataset.gold_rows``), beside the trajectories' rows.

    ``exclude`` are evaluation tasks: a training prompt equal to one of theirs is
    refused (``ConfigError`` naming the overlap). Also ``ConfigError``: a generator
    that is not a local model, a name already taken, no verified trajectory, a
    champion to start from that belongs to another base model."""
    base_model = trainable_base(config)
    method = method or config.distill.method
    registry = AdapterRegistry(config.home)
    name = name or registry.next_name()
    check_name(name)
    if name in {m.name for m in registry.list()}:
        raise ConfigError(f"adapter {name} already exists; pick another --name")
    start = start_adapter(config, registry, base_model)
    trajectories = list(trajectories)  # read twice: the rows, then which had memory
    settings = {"eval_hashes": prompt_hashes(exclude), "seed": config.distill.train.seed,
                "max_per_family": config.distill.max_per_family}
    rows = build_rows(trajectories, method, completion=config.distill.completion,
                      max_per_task=config.distill.max_per_task,
                      human_weight=config.distill.human_weight, **settings)
    gold = list(gold)
    if gold and method == "dpo":
        raise ConfigError("gold rows are prompt-completion examples, which dpo does not "
                          "train on; use --method sft or sft+dpo")
    if gold:
        completion = "answer" if config.distill.completion == "answer" else "worked"
        rows = gold_rows(gold, completion=completion, **settings) + rows
    if not rows:
        raise ConfigError(
            "no verified trajectories to learn from (or, for dpo, none with a failed attempt "
            "beside it); collect some with `selftaught run TASKS --hints reference`")
    dataset = write_dataset(rows, config.home / DATASETS_DIR / f"{name}.jsonl",
                            completion=config.distill.completion)
    with_memory = {t.id for t in trajectories if t.retrieved}
    if with_memory:
        dataset = dataset.model_copy(update={"memory_rows": sum(
            row.get("trajectory_id") in with_memory for row in rows)})

    from finetune.train import train_lora  # torch: only when training

    registry.root.mkdir(parents=True, exist_ok=True)
    sweep_scratch(registry.root)
    work = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{name}-{os.getpid()}-",
                                 dir=registry.root))
    try:
        result = train_lora(base_model, dataset.path, work / "adapter", method=method,
                            hyper=config.distill.train, callbacks=callbacks,
                            init_adapter=registry.path(start) if start else None)
        manifest = AdapterManifest.from_training(name, base_model, dataset, result, started_from=start)
        return registry.add(name, result.adapter_dir, manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def distill_runs(
    config: Config, *, run_ids: Sequence[str] | None = None, holdout: str | None = None,
    name: str | None = None,
) -> AdapterManifest:
    """``selftaught distill``: :func:`distill` on the trajectories of ``run_ids`` (default:
    every stored run), refusing the tasks of the ``holdout`` spec."""
    from memory.store import open_store
    from orchestrator.suites import load_tasks

    exclude = load_tasks(holdout) if holdout else []
    with open_store(config.home) as store:
        trajectories = collect_trajectories(store, run_ids)
    return distill(config, trajectories, name=name, exclude=exclude)


def start_adapter(config: Config, registry: AdapterRegistry, base_model: str) -> str | None:
    """The adapter training continues (``distill.start``), or None for a new one;
    ``ConfigError`` for a champion of another base model."""
    champion = registry.champion() if config.distill.start == "champion" else None
    if champion is None:
        return None
    if champion.base_model != base_model:
        raise ConfigError(
            f"distill.start = champion, but champion {champion.name} was trained on "
            f"{champion.base_model} and models.generator is {base_model}; set distill.start = "
            '"base" (or --start base) to train a new adapter')
    return champion.name


def sweep_scratch(root: Path) -> list[Path]:
    """Remove training scratch directories left by a process that no longer runs (a
    killed ``distill``); returns what was removed. Directories of live processes, and
    any whose name carries no process id, are left alone."""
    removed = []
    for path in root.glob(f"{SCRATCH_PREFIX}*"):
        match = re.search(r"-(\d+)-[^-]*$", path.name)
        if path.is_dir() and match and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
