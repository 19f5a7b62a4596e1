"""Damaged state is detected at start with a message naming the file and a repair
command, and ``selftaught doctor --repair`` repairs it without deleting anything.

Before: garbled pages or a garbage ``checkpoints.db`` gave raw tracebacks; a read-only
data directory was called "not a selftaught store, move it aside"; one bad row blocked
``runs list`` and ``memory export``; a zero-byte database was silently reset; a champion
whose directory was deleted could not be unset and was listed as fine."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from core.errors import ConfigError, StoreError
from core.records import RunRecord
from finetune.registry import AdapterRegistry
from memory import damage
from memory.store import SQLiteStore, open_store
from orchestrator.config import Config
from orchestrator.doctor import doctor
from tests.support import cli, make_trajectory, manifest, trained_dir

N = 60


def _filled_store(home: Path) -> Path:
    with open_store(home) as store:
        store.create_run(RunRecord(run_id="r", tasks_spec="t", settings={}, total=N))
        for i in range(N):
            store.add_trajectory(make_trajectory(i))
    return home / "selftaught.db"


def _garble(path: Path, start: float, end: float) -> None:
    """Overwrite the pages between fractions ``start`` and ``end`` of the file."""
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(int(size * start) // 4096 * 4096)
        handle.write(os.urandom(int(size * (end - start)) // 4096 * 4096 or 4096))


def test_garbled_pages_are_named_with_the_repair_and_salvage_keeps_what_is_readable(tmp_path):
    db = _filled_store(tmp_path / "home")
    _garble(db, 0.55, 0.7)
    problem = damage.check(db)
    assert problem, "quick_check must see the damage"

    exported = cli("memory", "export", str(tmp_path / "out.jsonl"), cwd=tmp_path)
    assert exported.returncode == 1 and "Traceback" not in exported.stderr, exported.stderr
    assert str(db) in exported.stderr.replace("\n", "") and "selftaught doctor --repair" in exported.stderr

    found = doctor(Config(home=tmp_path / "home"))
    assert not found.healthy and found.findings[0].path == str(db)
    repaired = doctor(Config(home=tmp_path / "home"), repair=True)
    assert repaired.healthy, repaired
    [kept] = [p for p in (tmp_path / "home").glob("selftaught.db.damaged-*")
              if not p.name.endswith(damage.SIDE_FILES)]
    assert kept.stat().st_size > 0  # the damaged file is kept, not deleted
    assert damage.check(db) is None
    with SQLiteStore(db) as store:
        salvaged = store.count()
        assert 0 < salvaged < N and store.get_run("r").total == N
    again = cli("memory", "export", str(tmp_path / "out.jsonl"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == salvaged


@pytest.mark.parametrize("damage_kind", ["garbage", "truncated"])
def test_a_damaged_checkpoint_file_is_found_and_moved_aside(tmp_path, damage_kind):
    home = tmp_path / "home"
    home.mkdir()
    checkpoints = home / "checkpoints.db"
    if damage_kind == "garbage":
        checkpoints.write_bytes(b"\x00not sqlite\xff" * 1000)
    else:
        with sqlite3.connect(checkpoints) as conn:
            conn.execute("CREATE TABLE writes (thread TEXT, blob BLOB)")
            conn.executemany("INSERT INTO writes VALUES (?, ?)",
                             [(str(i), os.urandom(2000)) for i in range(200)])
        with checkpoints.open("r+b") as handle:
            handle.truncate(checkpoints.stat().st_size // 2)
    report = doctor(Config(home=home))
    assert [f.path for f in report.findings] == [str(checkpoints)]
    assert doctor(Config(home=home), repair=True).healthy
    assert not checkpoints.exists() and list(home.glob("checkpoints.db.damaged-*"))
    assert doctor(Config(home=home)).findings == []


def test_a_zero_byte_store_is_lost_data_not_a_new_store(tmp_path):
    home = tmp_path / "home"
    _filled_store(home)
    (home / "selftaught.db").write_bytes(b"")  # e.g. truncated by a full disk
    with pytest.raises(StoreError, match="empty file \\(0 bytes\\)") as caught:
        open_store(home)
    assert "selftaught doctor --repair" in str(caught.value)
    listed = cli("runs", "list", cwd=tmp_path)
    assert listed.returncode == 1 and "0 bytes" in listed.stderr, listed.stderr
    assert doctor(Config(home=home), repair=True).healthy
    with open_store(home) as store:
        assert store.list_runs() == []
    assert list(home.glob("selftaught.db.damaged-*"))


def test_a_new_store_is_never_a_zero_byte_file(tmp_path):
    # The file appears whole (schema and all) or not at all, so an empty file is
    # always damage, never a store a killed process had just begun.
    with open_store(tmp_path / "home"):
        pass
    assert (tmp_path / "home" / "selftaught.db").stat().st_size > 0
    assert not list((tmp_path / "home").glob(".*.new*"))


def test_an_unwritable_directory_is_not_called_damaged():
    error = damage.describe(Path("/data/home/selftaught.db"),
                            sqlite3.OperationalError("attempt to write a readonly database"))
    assert isinstance(error, ConfigError)
    assert "not writable" in str(error) and "nothing is damaged" in str(error)
    assert "not a selftaught store" not in str(error) and "move" not in str(error)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_a_read_only_data_directory_is_reported_as_such(tmp_path):
    _filled_store(tmp_path / "home")
    os.chmod(tmp_path / "home", 0o555)
    try:
        listed = cli("run", "rg:gcd:n=1", cwd=tmp_path)
        assert listed.returncode == 2 and "not writable" in listed.stderr, listed.stderr
        assert "not a selftaught store" not in listed.stderr
    finally:
        os.chmod(tmp_path / "home", 0o755)


def test_one_bad_row_does_not_block_runs_list_or_export(tmp_path):
    db = _filled_store(tmp_path / "home")
    with sqlite3.connect(db) as conn:
        bad_id = conn.execute("SELECT id FROM trajectories WHERE seq = 7").fetchone()[0]
        conn.execute("UPDATE trajectories SET record = 'not json' WHERE seq = 7")
    listed = cli("runs", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout)["runs"][0]["done"] == N
    exported = cli("memory", "export", str(tmp_path / "out.jsonl"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert bad_id in exported.stderr and "skipped" in exported.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == N - 1
    report = doctor(Config(home=tmp_path / "home"))
    assert any(bad_id in f.problem for f in report.findings)


def test_a_champion_whose_directory_was_deleted_is_shown_missing_and_can_be_unset(tmp_path):
    home = tmp_path / "home"
    registry = AdapterRegistry(home)
    registry.add("a0001", trained_dir(tmp_path, "one"), manifest())
    registry.promote("a0001")
    shutil.rmtree(registry.root / "a0001")

    listed = cli("adapters", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0 and "a0001" in json.loads(listed.stdout)["missing"]
    table = cli("adapters", "list", cwd=tmp_path)
    assert "missing" in table.stdout + table.stderr
    refused = cli("run", "rg:gcd:n=1", cwd=tmp_path)
    assert refused.returncode == 2 and "adapters rollback" in refused.stderr, refused.stderr
    assert cli("runs", "list", "--json", cwd=tmp_path).stdout.strip() == '{"runs": []}'

    rolled = cli("adapters", "rollback", cwd=tmp_path)
    assert rolled.returncode == 0 and "base model" in rolled.stdout, rolled.stderr
    assert registry.champion() is None and registry.get("a0001").status == "retired"
    promote = cli("adapters", "promote", "a0001", cwd=tmp_path)
    assert promote.returncode == 2 and "missing" in promote.stderr


def test_doctor_rolls_back_a_missing_champion_to_the_one_it_replaced(tmp_path):
    home = tmp_path / "home"
    registry = AdapterRegistry(home)
    registry.add("a0001", trained_dir(tmp_path, "one"), manifest())
    registry.add("a0002", trained_dir(tmp_path, "two"), manifest())
    registry.promote("a0001")
    registry.promote("a0002")
    (registry.root / "a0002" / "adapter_model.safetensors").unlink()  # half gone
    report = doctor(Config(home=home), repair=True)
    assert report.healthy and "a0001" in report.findings[0].repaired
    assert registry.champion().name == "a0001"
