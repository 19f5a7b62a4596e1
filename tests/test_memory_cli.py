"""``selftaught memory ...`` through the installed CLI, in subprocesses: search, reindex
after the index directory is removed, repair after a process killed between the two
writes, and show / lessons / prune / stats with their ``--json`` shapes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from core.leakage import prompt_hash
from memory.bank import INDEX_DIR, MemoryBank, WorthRule, new_id
from memory.items import Case, LessonOrigin
from tests.support import cli

ROOT = Path(__file__).resolve().parents[1]


def _case(i: int) -> Case:
    prompt = f"What is {i} + {2 * i + 3}?"
    return Case(id=new_id("case"), task_id=f"add/{i}", prompt=prompt, prompt_hash=prompt_hash(prompt),
                family="add", reply=f"Answer: {3 * i + 3}", answer=str(3 * i + 3),
                trajectory_id=f"t{i}", run_id="r1", model="m")


def _origin(i: int) -> LessonOrigin:
    c = _case(i)
    return LessonOrigin(trajectory_id=f"t{i}", task_id=c.task_id, prompt=c.prompt,
                        prompt_hash=c.prompt_hash, family="add")


def _json(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_reindex_restores_identical_search_results_after_the_index_is_removed(tmp_path):
    with MemoryBank(tmp_path / "home") as bank:
        for i in range(8):
            bank.add_case(_case(i))
        bank.add_lesson("Add the ones digits first, then the tens.", _origin(1), source="model",
                        author="m", answers=["6"])
    before = _json(cli("memory", "search", "What is 4 + 9?", "-k", "9", "--json", cwd=tmp_path))
    assert len(before["hits"]) == 9 and {h["kind"] for h in before["hits"]} == {"case", "lesson"}
    assert set(before["hits"][0]) >= {"id", "kind", "similarity", "family", "text", "status", "reply", "source"}

    shutil.rmtree(tmp_path / "home" / INDEX_DIR)
    rebuilt = _json(cli("memory", "reindex", "--json", cwd=tmp_path))
    assert rebuilt["entries"] == 10  # 8 cases, the lesson's advice and its task
    after = _json(cli("memory", "search", "What is 4 + 9?", "-k", "9", "--json", cwd=tmp_path))
    assert [(h["id"], round(h["similarity"], 3)) for h in after["hits"]] == [
        (h["id"], round(h["similarity"], 3)) for h in before["hits"]]

    lessons_only = _json(cli("memory", "search", "ones digits", "--kind", "lesson", "--json", cwd=tmp_path))
    assert [h["kind"] for h in lessons_only["hits"]] == ["lesson"]
    bad = cli("memory", "search", "x", "--kind", "poem", cwd=tmp_path)
    assert bad.returncode == 2 and "--kind" in bad.stderr


KILLED_BETWEEN_WRITES = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from core.leakage import prompt_hash
    from memory.bank import MemoryBank
    from memory.index import VectorIndex
    from memory.items import Case

    def case(i):
        prompt = f"What is {i} + {2 * i + 3}?"
        return Case(id=f"c-{i}", task_id=f"add/{i}", prompt=prompt, prompt_hash=prompt_hash(prompt),
                    family="add", reply="Answer: 1", answer="1", trajectory_id=f"t{i}", run_id="r1",
                    model="m")

    bank = MemoryBank(Path(sys.argv[1]))
    bank.add_case(case(0))
    def die(self, *args, **kwargs):  # memory.db has the row; the index never gets it
        os.kill(os.getpid(), signal.SIGKILL)
    VectorIndex.upsert = die
    bank.add_case(case(1))
""")


def test_a_process_killed_between_the_two_writes_is_repaired_at_the_next_start(tmp_path):
    home = tmp_path / "home"
    done = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_WRITES, str(home)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    stats = _json(cli("memory", "stats", "--json", cwd=tmp_path))
    assert stats["repaired_on_open"] == 1 and stats["unindexed"] == 0
    assert stats["cases"] == {"active": 2} and stats["index_entries"] == 2
    found = _json(cli("memory", "search", "What is 1 + 5?", "-k", "1", "--kind", "case", "--json", cwd=tmp_path))
    assert found["hits"][0]["text"] == "What is 1 + 5?"


def test_show_lessons_prune_and_stats(tmp_path):
    (tmp_path / "selftaught.toml").write_text("[memory]\nmin_uses = 2\nretire_below = -0.3\n")
    with MemoryBank(tmp_path / "home", worth_rule=WorthRule(min_uses=2, retire_below=-0.3)) as bank:
        good, bad = _case(1), _case(2)
        bank.add_case(good)
        bank.add_case(bad)
        lesson = bank.add_lesson("Add the ones digits first, then the tens.", _origin(3),
                                 source="person", author="ada", answers=["12"]).lesson
        bank.add_lesson("Line the numbers up by place value.", _origin(4), source="model",
                        author="m", answers=["15"])
        for i in range(2):
            bank.record_outcome(f"base{i}", "r1", "add", i == 0, [])
            bank.record_outcome(f"g{i}", "r1", "add", True, [good.id, lesson.id])
            bank.record_outcome(f"b{i}", "r1", "add", False, [bad.id])

    shown = _json(cli("memory", "show", good.id, "--json", cwd=tmp_path))
    assert shown["kind"] == "case" and shown["item"]["prompt"] == good.prompt
    assert shown["worth"]["uses"] == 2 and shown["worth"]["wins"] == 2 and shown["worth"]["lift"] > 0
    text = cli("memory", "show", bad.id, cwd=tmp_path)
    assert text.returncode == 0 and "retired" in text.stdout and "lift per use" in text.stdout
    missing = cli("memory", "show", "c-nope", cwd=tmp_path)
    assert missing.returncode == 2 and "memory search" in missing.stderr

    listed = _json(cli("memory", "lessons", "--family", "add", "--json", cwd=tmp_path))["lessons"]
    assert [row["source"] for row in listed] == ["person", "model"]  # a person's lessons first
    assert listed[0]["count"] == 1 and listed[0]["worth"]["uses"] == 2

    assert _json(cli("memory", "prune", "--json", cwd=tmp_path)) == {"removed": [bad.id]}
    stats = _json(cli("memory", "stats", "--json", cwd=tmp_path))
    assert stats["cases"] == {"active": 1} and stats["lessons"] == {"active": 2}
    assert stats["trajectories_logged"] == 6 and stats["trajectories_with_memory"] == 4
    assert stats["backend"] == "persistent" and stats["unindexed"] == 0
