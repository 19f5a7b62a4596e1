"""The adapter registry: add, list, promote, rollback, resolve, and crash safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.errors import ConfigError, StoreError
from finetune import registry as registry_module
from finetune.registry import AdapterManifest, AdapterRegistry, ResolvedAdapter
from tests.support import manifest, trained_dir


@pytest.fixture
def reg(tmp_path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "home")


def add(reg: AdapterRegistry, tmp_path: Path, name: str | None = None) -> AdapterManifest:
    name = name or reg.next_name()
    return reg.add(name, trained_dir(tmp_path / "runs", name), manifest())


def test_add_moves_the_adapter_in_and_lists_it(reg, tmp_path):
    assert reg.list() == [] and reg.champion() is None and reg.next_name() == "a0001"
    source = trained_dir(tmp_path, "x")
    stored = reg.add("a0001", source, manifest())
    assert stored.name == "a0001" and stored.status == "candidate"
    assert not source.exists()  # moved, not copied
    directory = reg.path("a0001")
    assert directory == tmp_path / "home" / "adapters" / "a0001"
    assert (directory / "adapter_model.safetensors").read_bytes() == b"weights-x"
    on_disk = AdapterManifest.model_validate_json((directory / "manifest.json").read_text())
    assert on_disk == stored and on_disk.dataset.sha256 == "0" * 64
    assert [m.name for m in reg.list()] == ["a0001"] and reg.get("a0001") == stored
    assert reg.next_name() == "a0002"
    # A fresh handle (another process) sees the same registry.
    assert AdapterRegistry(tmp_path / "home").get("a0001") == stored


def test_add_refuses_bad_input(reg, tmp_path):
    add(reg, tmp_path, "a0001")
    with pytest.raises(ConfigError, match="already exists"):
        reg.add("a0001", trained_dir(tmp_path, "dup"), manifest())
    for bad in ("champion", "none", "../escape", ".hidden", "", "a/b"):
        with pytest.raises(ConfigError, match="invalid adapter name"):
            reg.add(bad, trained_dir(tmp_path, f"bad{len(bad)}{bad.count('.')}"), manifest())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="not a trained adapter"):
        reg.add("a0002", empty, manifest())


def test_unknown_names_are_config_errors_listing_the_names(reg, tmp_path):
    add(reg, tmp_path, "a0001")
    add(reg, tmp_path, "a0002")
    for call in (reg.get, reg.path, reg.promote, lambda n: reg.resolve(n, BASE), lambda n: reg.set_eval(n, {})):
        with pytest.raises(ConfigError) as err:
            call("nope")
        assert "nope" in str(err.value) and "a0001, a0002" in str(err.value)


def test_promote_and_rollback_walk_the_champion_history(reg, tmp_path):
    for _ in range(3):
        add(reg, tmp_path)
    with pytest.raises(ConfigError, match="no adapter is champion"):
        reg.rollback()
    first = reg.promote("a0001")
    assert first.status == "champion" and first.previous_champion is None and first.promoted_at
    with pytest.raises(ConfigError, match="nothing to roll back to"):
        reg.rollback()
    assert reg.promote("a0001") == first  # already champion: unchanged
    reg.promote("a0002")
    third = reg.promote("a0003")
    assert third.previous_champion == "a0002"
    statuses = {m.name: m.status for m in reg.list()}
    assert statuses == {"a0001": "retired", "a0002": "retired", "a0003": "champion"}
    assert reg.champion().name == "a0003"

    restored = reg.rollback()
    assert restored.name == "a0002" and reg.champion().name == "a0002"
    assert reg.get("a0003").status == "retired"
    assert reg.rollback().name == "a0001"  # a second rollback goes further back
    assert {m.name: m.status for m in reg.list()} == {
        "a0001": "champion", "a0002": "retired", "a0003": "retired"
    }
    # The per-directory manifest copies follow the index.
    copy = json.loads((reg.path("a0001") / "manifest.json").read_text())
    assert copy["status"] == "champion"


BASE = "local/smollm2"


def test_resolve_handles_names_champion_none_and_paths(reg, tmp_path):
    base_model = ResolvedAdapter(label="none", path=None)
    assert reg.resolve(None, BASE) == base_model and reg.resolve("none", BASE) == base_model
    assert reg.resolve("champion", BASE) == base_model  # no champion yet: the base model
    add(reg, tmp_path, "a0001")
    add(reg, tmp_path, "a0002")
    assert reg.resolve("a0002", BASE) == ResolvedAdapter(label="a0002", path=reg.path("a0002").resolve())
    reg.promote("a0001")
    assert reg.resolve(" Champion ", BASE) == ResolvedAdapter(label="a0001", path=reg.path("a0001").resolve())
    assert reg.resolve("NONE", BASE) == base_model
    # A directory on disk is taken as given; one that is not an adapter is refused.
    loose = trained_dir(tmp_path, "loose")
    assert reg.resolve(str(loose), BASE) == ResolvedAdapter(label=str(loose), path=loose.resolve())
    with pytest.raises(ConfigError, match="not a LoRA adapter directory"):
        reg.resolve(str(tmp_path), BASE)
    with pytest.raises(ConfigError, match=r"'nosuch' not found.*a0001, a0002"):
        reg.resolve("nosuch", BASE)


def test_resolve_checks_the_base_model(reg, tmp_path):
    add(reg, tmp_path, "a0001")
    reg.promote("a0001")
    # The champion of another base is not the incumbent of this generator...
    assert reg.resolve("champion", "local/other") == ResolvedAdapter(label="none", path=None)
    # ...and naming it for that generator is an error that says what to do.
    with pytest.raises(ConfigError, match="trained on local/smollm2.*--model local/smollm2"):
        reg.resolve("a0001", "local/other")


def test_resolve_reports_a_missing_directory(reg, tmp_path):
    add(reg, tmp_path, "a0001")
    for leftover in (reg.root / "a0001").iterdir():
        leftover.unlink()
    with pytest.raises(ConfigError, match="retrain adapter a0001 or restore its directory"):
        reg.resolve("a0001", BASE)


def test_set_eval_merges_results(reg, tmp_path):
    add(reg, tmp_path, "a0001")
    reg.set_eval("a0001", {"holdout": {"pass_at_1": 0.4}})
    updated = reg.set_eval("a0001", {"retention": {"pass_at_1": 0.9}})
    assert updated.evaluation == {"holdout": {"pass_at_1": 0.4}, "retention": {"pass_at_1": 0.9}}
    assert reg.get("a0001").evaluation == updated.evaluation


def test_a_crash_before_the_index_write_leaves_no_listing(reg, tmp_path, monkeypatch):
    add(reg, tmp_path, "a0001")
    real_write = registry_module._write_json

    def crash_on_index(path, data):
        if Path(path).name == registry_module.INDEX_FILE:
            raise KeyboardInterrupt  # the process dies right before listing the adapter
        real_write(path, data)

    monkeypatch.setattr(registry_module, "_write_json", crash_on_index)
    with pytest.raises(KeyboardInterrupt):
        reg.add("a0002", trained_dir(tmp_path, "crashed"), manifest())
    monkeypatch.setattr(registry_module, "_write_json", real_write)

    fresh = AdapterRegistry(tmp_path / "home")
    assert [m.name for m in fresh.list()] == ["a0001"]
    with pytest.raises(ConfigError):
        fresh.path("a0002")
    assert fresh.next_name() == "a0002"
    # The next add under the same name replaces the orphan directory and works.
    stored = fresh.add("a0002", trained_dir(tmp_path, "retry"), manifest())
    assert stored.status == "candidate"
    assert (fresh.path("a0002") / "adapter_model.safetensors").read_bytes() == b"weights-retry"
    assert [m.name for m in fresh.list()] == ["a0001", "a0002"]
    assert not [p for p in fresh.root.iterdir() if p.name.startswith(".tmp-")]


def test_a_crash_while_staging_leaves_nothing_listed_and_is_swept(reg, tmp_path, monkeypatch):
    real_rename = os.rename

    def crash_on_final_rename(src, dst):
        if Path(dst).name == "a0001":
            raise KeyboardInterrupt
        real_rename(src, dst)

    source = trained_dir(tmp_path, "x")
    monkeypatch.setattr(registry_module.os, "rename", crash_on_final_rename)
    with pytest.raises(KeyboardInterrupt):
        reg.add("a0001", source, manifest())
    monkeypatch.undo()
    assert reg.list() == [] and not (reg.root / "a0001").exists()
    assert (source / "adapter_model.safetensors").is_file()  # handed back, not lost
    # A hard kill leaves the staging directory behind; the next add sweeps it.
    (reg.root / ".tmp-a0001-dead" / "adapter").mkdir(parents=True)
    add(reg, tmp_path, "a0001")
    visible = sorted(p.name for p in reg.root.iterdir() if not p.name.startswith("."))
    assert visible == ["a0001", "registry.json"]
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".tmp-")]


def test_a_damaged_index_is_a_store_error(reg, tmp_path):
    add(reg, tmp_path, "a0001")
    reg.index_path.write_text("{not json")
    with pytest.raises(StoreError):
        reg.list()
    reg.index_path.write_text(json.dumps({"schema_version": 99, "adapters": {}}))
    with pytest.raises(StoreError, match="schema version"):
        reg.list()


def test_index_writes_are_atomic_replacements(reg, tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(registry_module.os, "replace",
                        lambda a, b: (replaced.append(Path(b).name), real_replace(a, b)))
    add(reg, tmp_path, "a0001")
    reg.promote("a0001")
    assert replaced.count("registry.json") == 2
