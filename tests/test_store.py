"""The one shared suite every ``TrajectoryStore`` backend must pass.

A backend plugs in by adding a ``Backend`` factory to ``BACKENDS``: how to open (and
reopen) its durable location, how to mark that location as written by another schema
version, how a subprocess opens it, and how to check its integrity. Tests below the
"SQLite only" line check things that exist only for that backend.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.errors import ConfigError, SelftaughtError, StoreError
from memory import store as store_module
from core.records import (
    SCHEMA_VERSION,
    Attempt,
    Hint,
    Privileged,
    RunRecord,
    Task,
    Trajectory,
    Verdict,
    VerifierSpec,
)
from memory.store import RunTotals, SQLiteStore, TrajectoryStore, open_store

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Backend:
    """How the shared suite drives one backend."""

    open: Callable[[], TrajectoryStore]
    """Open (or reopen) the same durable location; each call gives a fresh handle."""
    set_schema_version: Callable[[int], None]
    """Mark the (closed) location as written by that schema version."""
    subprocess_prelude: str
    """Python source that binds ``store`` to the location, run in a child process."""
    check_integrity: Callable[[], None]
    """Raise AssertionError when the location is damaged at a level below the records."""


def sqlite_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "selftaught.db"

    def set_schema_version(version: int) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))

    def check_integrity() -> None:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    return Backend(
        open=lambda: SQLiteStore(path),
        set_schema_version=set_schema_version,
        subprocess_prelude=f"from memory.store import SQLiteStore\nstore = SQLiteStore({str(path)!r})\n",
        check_integrity=check_integrity,
    )


BACKENDS: dict[str, Callable[[Path], Backend]] = {"sqlite": sqlite_backend}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
def store(backend: Backend) -> Iterator[TrajectoryStore]:
    opened = backend.open()
    yield opened
    opened.close()


# -- record factories ------------------------------------------------------------------


def make_run(run_id: str = "run-1", *, created_at: datetime | None = None) -> RunRecord:
    extra = {"created_at": created_at, "updated_at": created_at} if created_at else {}
    return RunRecord(
        run_id=run_id,
        tasks_spec="rg:basic_arithmetic:n=3:seed=7",
        settings={"max_attempts": 3, "hints": "critique", "models": {"generator": "local/smollm2"}},
        total=3,
        **extra,
    )


def make_trajectory(
    run_id: str = "run-1",
    task_id: str = "rg/basic_arithmetic/7/0",
    *,
    family: str = "basic_arithmetic",
    solved_at: int | None = 2,
    attempts: int = 2,
    tokens: int = 120,
    seconds: float = 1.25,
    reply_size: int = 0,
) -> Trajectory:
    task = Task(
        id=task_id,
        prompt="What is 2 + 2? ünïcødé ✓",
        verifier=VerifierSpec(type="numeric", params={"expected": 4, "tolerance": 1e-6}),
        privileged=Privileged(reference_answer="4", tests=None),
        family=family,
        metadata={"seed": 7, "nested": {"list": [1, 2.5, None, "x"]}},
    )
    made: list[Attempt] = []
    messages = [{"role": "system", "content": "You solve problems."}, {"role": "user", "content": task.prompt}]
    for index in range(1, attempts + 1):
        passed = index == solved_at
        reply = f"Thinking... attempt {index}\nAnswer: {4 if passed else 5}" + "x" * reply_size
        hint = None
        if not passed and index < attempts:
            hint = Hint(text=f"Check the sum (hint {index}).", source="model", author="local/smollm2",
                        policy="critique", used_privileged=index % 2 == 0)
        made.append(
            Attempt(
                index=index,
                messages=list(messages),
                reply=reply,
                answer="4" if passed else "5",
                verdict=Verdict(passed=passed, score=1.0 if passed else 0.0,
                                feedback="" if passed else "expected 4, got 5", details={"got": 5}),
                model="local/smollm2",
                adapter="lora-3" if index == 1 else None,
                temperature=0.7,
                prompt_tokens=40 + index,
                completion_tokens=20 + index,
                latency_s=0.125 * index,
                resamples=index - 1,
                error=None,
                critique=None if passed else "The sum is off by one.",
                critique_model=None if passed else "local/smollm2",
                hint=hint,
            )
        )
        messages += [{"role": "assistant", "content": reply},
                     {"role": "user", "content": f"Wrong. Hint: {hint.text if hint else ''}"}]
    return Trajectory(
        run_id=run_id,
        task=task,
        lessons=["Add carefully.", "Re-read the question."],
        attempts=made,
        outcome="solved" if solved_at is not None else "unsolved",
        hint_policy="critique",
        generator_model="local/smollm2",
        critic_model="openai/gpt-4o-mini",
        hint_model="anthropic/claude",
        adapter="lora-3",
        stop_reason="verified" if solved_at is not None else "max_attempts",
        tokens=tokens,
        seconds=seconds,
    )


# -- the shared suite ------------------------------------------------------------------


def test_implements_the_protocol(store: TrajectoryStore) -> None:
    assert isinstance(store, TrajectoryStore)


def test_trajectory_round_trip_field_by_field(store: TrajectoryStore) -> None:
    store.create_run(make_run())
    original = make_trajectory(solved_at=2, attempts=3)
    assert store.add_trajectory(original) is True
    (back,) = store.trajectories()
    for name in Trajectory.model_fields:
        assert getattr(back, name) == getattr(original, name), name
    for got, want in zip(back.attempts, original.attempts, strict=True):
        for name in Attempt.model_fields:
            assert getattr(got, name) == getattr(want, name), f"attempt {want.index}: {name}"
    assert back.task.metadata == {"seed": 7, "nested": {"list": [1, 2.5, None, "x"]}}
    assert back.created_at.tzinfo is not None and back.created_at == original.created_at
    assert back.solved_at == 2
    assert back == original


def test_run_round_trip(store: TrajectoryStore) -> None:
    run = make_run()
    store.create_run(run)
    back = store.get_run(run.run_id)
    for name in RunRecord.model_fields:
        assert getattr(back, name) == getattr(run, name), name


def test_create_run_twice_is_refused(store: TrajectoryStore) -> None:
    store.create_run(make_run())
    with pytest.raises(StoreError, match="run-1"):
        store.create_run(make_run())


def test_add_is_idempotent_per_run_and_task(store: TrajectoryStore) -> None:
    store.create_run(make_run("run-1"))
    store.create_run(make_run("run-2"))
    first = make_trajectory("run-1", "t1", solved_at=1)
    again = make_trajectory("run-1", "t1", solved_at=None)
    assert store.add_trajectory(first) is True
    assert store.add_trajectory(again) is False
    assert store.add_trajectory(first) is False
    assert [t.id for t in store.trajectories(run_id="run-1")] == [first.id]
    assert store.trajectories()[0].outcome == "solved"
    # The same task in another run is a different trajectory.
    assert store.add_trajectory(make_trajectory("run-2", "t1")) is True
    assert store.count() == 2


def test_reused_trajectory_id_for_another_task_is_an_error(store: TrajectoryStore) -> None:
    store.create_run(make_run())
    first = make_trajectory(task_id="t1")
    store.add_trajectory(first)
    clash = make_trajectory(task_id="t2").model_copy(update={"id": first.id})
    with pytest.raises(StoreError):
        store.add_trajectory(clash)
    assert store.count() == 1


def test_trajectory_for_unknown_run_is_refused(store: TrajectoryStore) -> None:
    with pytest.raises(StoreError, match="nope"):
        store.add_trajectory(make_trajectory("nope"))
    assert store.count() == 0


def test_finished_task_ids(store: TrajectoryStore) -> None:
    store.create_run(make_run("run-1"))
    store.create_run(make_run("run-2"))
    store.add_trajectory(make_trajectory("run-1", "a", solved_at=1))
    store.add_trajectory(make_trajectory("run-1", "b", solved_at=None))
    store.add_trajectory(make_trajectory("run-2", "c"))
    assert store.finished_task_ids("run-1") == {"a", "b"}
    assert store.finished_task_ids("run-2") == {"c"}
    assert store.finished_task_ids("unknown") == set()


def test_filters_limit_and_insertion_order(store: TrajectoryStore) -> None:
    store.create_run(make_run("run-1"))
    store.create_run(make_run("run-2"))
    # Task ids deliberately out of alphabetical order: order is insertion order.
    added = [
        make_trajectory("run-1", "z", family="arith", solved_at=1),
        make_trajectory("run-1", "a", family="logic", solved_at=None),
        make_trajectory("run-2", "m", family="arith", solved_at=None),
        make_trajectory("run-2", "z", family="logic", solved_at=2),
    ]
    for t in added:
        store.add_trajectory(t)
    ids = lambda ts: [t.id for t in ts]  # noqa: E731
    assert ids(store.trajectories()) == ids(added)
    assert ids(store.trajectories(run_id="run-2")) == ids(added[2:])
    assert ids(store.trajectories(task_id="z")) == [added[0].id, added[3].id]
    assert ids(store.trajectories(family="arith")) == [added[0].id, added[2].id]
    assert ids(store.trajectories(outcome="unsolved")) == [added[1].id, added[2].id]
    assert ids(store.trajectories(run_id="run-2", outcome="solved", family="logic")) == [added[3].id]
    assert ids(store.trajectories(limit=3)) == ids(added[:3])
    assert store.trajectories(limit=0) == []
    assert store.trajectories(run_id="other") == []


def test_count(store: TrajectoryStore) -> None:
    assert store.count() == 0
    store.create_run(make_run("run-1"))
    store.create_run(make_run("run-2"))
    for i in range(3):
        store.add_trajectory(make_trajectory("run-1", f"t{i}"))
    store.add_trajectory(make_trajectory("run-2", "t0"))
    assert store.count() == 4
    assert store.count("run-1") == 3
    assert store.count("run-2") == 1
    assert store.count("nope") == 0


def test_run_totals(store: TrajectoryStore) -> None:
    store.create_run(make_run("run-1"))
    store.create_run(make_run("run-2"))
    store.add_trajectory(make_trajectory("run-1", "a", solved_at=1, attempts=1, tokens=10, seconds=0.5))
    store.add_trajectory(make_trajectory("run-1", "b", solved_at=2, attempts=2, tokens=20, seconds=1.0))
    store.add_trajectory(make_trajectory("run-1", "c", solved_at=2, attempts=3, tokens=30, seconds=1.5))
    store.add_trajectory(make_trajectory("run-1", "d", solved_at=None, attempts=3, tokens=40, seconds=2.0))
    store.add_trajectory(make_trajectory("run-2", "a", tokens=1000))
    summary = store.run_totals("run-1")
    assert summary == RunTotals(run_id="run-1", total=4, solved=3, unsolved=1,
                                 solved_at={1: 1, 2: 2}, tokens=100, seconds=5.0)
    assert summary.model_dump(mode="json")["solved_at"] == {"1": 1, "2": 2}
    empty = make_run("run-3")
    store.create_run(empty)
    assert store.run_totals("run-3") == RunTotals(run_id="run-3")


def test_run_totals_of_unknown_run(store: TrajectoryStore) -> None:
    with pytest.raises(ConfigError, match="nope"):
        store.run_totals("nope")


def test_list_and_get_runs(store: TrajectoryStore) -> None:
    assert store.list_runs() == []
    base = datetime(2025, 1, 1, tzinfo=UTC)
    store.create_run(make_run("old", created_at=base))
    store.create_run(make_run("newest", created_at=base + timedelta(days=2)))
    # Same instant in another zone, an hour later than "old": ordering is by instant.
    minus_five = timezone(timedelta(hours=-5))  # its wall clock reads 2024-12-31
    store.create_run(make_run("middle", created_at=(base + timedelta(hours=1)).astimezone(minus_five)))
    assert [r.run_id for r in store.list_runs()] == ["newest", "middle", "old"]
    assert store.get_run("middle").created_at == base + timedelta(hours=1)


def test_unknown_run_error_names_it_and_the_fix(store: TrajectoryStore) -> None:
    with pytest.raises(ConfigError) as caught:
        store.get_run("run-missing")
    assert "run-missing" in str(caught.value)
    assert "selftaught runs list" in str(caught.value)
    assert isinstance(caught.value, SelftaughtError)


def test_set_run_status(store: TrajectoryStore) -> None:
    run = make_run(created_at=datetime(2025, 1, 1, tzinfo=UTC))
    store.create_run(run)
    store.set_run_status(run.run_id, "interrupted")
    back = store.get_run(run.run_id)
    assert back.status == "interrupted"
    assert back.updated_at > run.updated_at
    assert back.created_at == run.created_at and back.settings == run.settings
    store.set_run_status(run.run_id, "finished")
    assert store.get_run(run.run_id).status == "finished"
    assert [r.status for r in store.list_runs()] == ["finished"]
    with pytest.raises(ConfigError, match="nope"):
        store.set_run_status("nope", "finished")
    with pytest.raises(ValueError):
        store.set_run_status(run.run_id, "bogus")  # type: ignore[arg-type]
    assert store.get_run(run.run_id).status == "finished"


def test_data_survives_reopening(backend: Backend) -> None:
    first = backend.open()
    first.create_run(make_run())
    added = [make_trajectory(task_id=f"t{i}", solved_at=(i % 3) or None, attempts=2) for i in range(5)]
    for t in added:
        first.add_trajectory(t)
    first.set_run_status("run-1", "interrupted")
    first.close()

    second = backend.open()
    try:
        assert second.trajectories() == added
        assert second.get_run("run-1").status == "interrupted"
        assert second.finished_task_ids("run-1") == {f"t{i}" for i in range(5)}
        # A resumed run keeps its idempotence across the reopen.
        assert second.add_trajectory(make_trajectory(task_id="t0")) is False
    finally:
        second.close()


def test_newer_schema_is_refused(backend: Backend) -> None:
    backend.open().close()
    backend.set_schema_version(SCHEMA_VERSION + 1)
    with pytest.raises(StoreError) as caught:
        backend.open()
    message = str(caught.value)
    assert str(SCHEMA_VERSION + 1) in message
    assert "upgrade selftaught" in message.lower()


def test_concurrent_writes_from_threads(backend: Backend, store: TrajectoryStore) -> None:
    store.create_run(make_run())
    other = backend.open()  # a second handle on the same location, as another process would have
    threads, per_thread, n_tasks = 6, 30, 60
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work(worker: int) -> None:
        handle = store if worker % 2 == 0 else other
        start.wait()
        try:
            for i in range(per_thread):
                # Each task is written by several threads; exactly one must win.
                task_id = f"t{(worker * 7 + i * 2) % n_tasks}"
                ok = handle.add_trajectory(make_trajectory(task_id=task_id))
                with lock:
                    results.append((task_id, ok))
                handle.count()  # reads interleaved with writes
        except BaseException as exc:  # surfaced below; a thread's exception is otherwise lost
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    other.close()
    assert not errors, errors
    assert len(results) == threads * per_thread
    attempted = {task_id for task_id, _ in results}
    winners = [task_id for task_id, ok in results if ok]
    assert sorted(winners) == sorted(attempted)  # one True per task, no more
    assert store.count() == len(attempted)
    assert store.finished_task_ids("run-1") == attempted
    assert len({t.id for t in store.trajectories()}) == len(attempted)


WRITER = """
import sys
from core.records import RunRecord
sys.path.insert(0, {tests_dir!r})
from test_store import make_trajectory
i = 0
while True:
    store.add_trajectory(make_trajectory(task_id=f"k{{i}}", attempts=3, reply_size=20_000))
    i += 1
"""


def test_sigkill_mid_writes_leaves_only_whole_records(backend: Backend) -> None:
    setup = backend.open()
    setup.create_run(make_run())
    setup.close()
    source = backend.subprocess_prelude + textwrap.dedent(WRITER.format(tests_dir=str(REPO_ROOT / "tests")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", source], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watcher = backend.open()
    try:
        deadline = time.monotonic() + 60
        while watcher.count() < 25:
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.02)
        # Kill while the loop is hot: most likely mid-transaction.
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        watcher.close()
    assert child.returncode == -signal.SIGKILL

    backend.check_integrity()
    reopened = backend.open()
    try:
        stored = reopened.trajectories()
        assert len(stored) == reopened.count() >= 25
        task_ids = [t.task.id for t in stored]
        # Rows are the loop's first n, in order, each one whole.
        assert task_ids == [f"k{i}" for i in range(len(stored))]
        for t in stored:
            expected = make_trajectory(task_id=t.task.id, attempts=3, reply_size=20_000)
            assert t.model_dump(exclude={"id", "created_at"}) == expected.model_dump(exclude={"id", "created_at"})
        assert reopened.finished_task_ids("run-1") == set(task_ids)
        # The store is still writable after the crash.
        assert reopened.add_trajectory(make_trajectory(task_id="after-crash")) is True
    finally:
        reopened.close()


# -- SQLite only -----------------------------------------------------------------------


def test_sqlite_pragmas(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        conn = store._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    with sqlite3.connect(tmp_path / "s.db") as raw:
        assert raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


def test_open_store_creates_the_directory(tmp_path: Path) -> None:
    home = tmp_path / "deep" / "home"
    with open_store(home) as store:
        store.create_run(make_run())
    assert (home / "selftaught.db").is_file()
    with open_store(home) as store:
        assert store.get_run("run-1").run_id == "run-1"


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "selftaught.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a selftaught store"):
        SQLiteStore(path)


def test_old_records_are_upgraded_on_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        store.create_run(make_run())
        store.add_trajectory(make_trajectory())
    # Pretend version 0 called the field "stop" and teach the store to rename it.
    with sqlite3.connect(path) as raw:
        record = json.loads(raw.execute("SELECT record FROM trajectories").fetchone()[0])
        record["stop"] = record.pop("stop_reason")
        record["schema_version"] = 0
        raw.execute("UPDATE trajectories SET record = ?", (json.dumps(record),))

    def rename_stop(old: dict) -> dict:
        if "task" in old:
            old["stop_reason"] = old.pop("stop")
        return old

    monkeypatch.setitem(store_module._MIGRATIONS, 0, rename_stop)
    with SQLiteStore(path) as store:
        (t,) = store.trajectories()
        assert t.stop_reason == "verified" and t.schema_version == SCHEMA_VERSION
        assert store.get_run("run-1").schema_version == SCHEMA_VERSION


def test_a_record_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        store.create_run(make_run())
    with sqlite3.connect(path) as raw:
        record = json.loads(raw.execute("SELECT record FROM runs").fetchone()[0])
        record["schema_version"] = SCHEMA_VERSION + 5
        raw.execute("UPDATE runs SET record = ?", (json.dumps(record),))
    with SQLiteStore(path) as store, pytest.raises(StoreError, match=str(SCHEMA_VERSION + 5)):
        store.get_run("run-1")


def test_a_damaged_record_is_skipped_with_a_warning_naming_it(tmp_path: Path, caplog) -> None:
    # One bad row used to make every read of the table fail (runs list, memory export).
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        store.create_run(make_run())
        bad, good = make_trajectory(task_id="bad"), make_trajectory(task_id="good")
        store.add_trajectory(bad)
        store.add_trajectory(good)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE trajectories SET record = '{\"half\": ' WHERE id = ?", (bad.id,))
    with SQLiteStore(path) as store:
        assert [t.id for t in store.trajectories()] == [good.id]
        assert [r.run_id for r in store.list_runs()] == ["run-1"]
    assert bad.id in caplog.text and "skipped" in caplog.text and "selftaught doctor" in caplog.text


# -- task errors, run ownership (reliability) --------------------------------------------


def test_task_errors_are_open_until_the_task_has_a_trajectory(tmp_path: Path) -> None:
    from core.records import TaskError

    with SQLiteStore(tmp_path / "s.db") as store:
        store.create_run(make_run())
        t = make_trajectory()
        for message in ("first try", "second try"):
            store.add_task_error(TaskError(run_id="run-1", task_id=t.task.id, kind="ModelError",
                                           message=message))
        store.add_task_error(TaskError(run_id="run-1", task_id="other", kind="ConfigError",
                                       message="bad"))
        assert [(e.task_id, e.message) for e in store.task_errors("run-1")] == [
            (t.task.id, "second try"), ("other", "bad")]
        store.add_trajectory(t)
        assert [e.task_id for e in store.task_errors("run-1")] == ["other"]
        assert len(store.task_errors("run-1", open_only=False)) == 3
        with pytest.raises(StoreError, match="create_run must come first"):
            store.add_task_error(TaskError(run_id="nope", task_id="x", kind="K", message="m"))


def test_claim_is_checked_inside_the_write_and_heartbeats_need_the_owner(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        store.create_run(make_run())
        claimed = store.claim_run("run-1", pid=11, host="h")
        assert (claimed.status, claimed.pid, claimed.host) == ("running", 11, "h")
        assert claimed.heartbeat_at is not None

        def refuse(run):
            raise ConfigError(f"owned by {run.pid}")

        with pytest.raises(ConfigError, match="owned by 11"):
            store.claim_run("run-1", pid=22, host="h", check=refuse)
        assert store.get_run("run-1").pid == 11  # the refused claim changed nothing
        assert store.heartbeat("run-1", 22) is False and store.heartbeat("run-1", 11) is True
        store.set_run_status("run-1", "finished")
        assert store.heartbeat("run-1", 11) is False  # a finished run takes no heartbeat
        assert store.heartbeat("nope", 11) is False
