"""The vector memory's shared suite, run against both backends: chromadb embedded
(``PersistentClient``) and a real ``chroma run`` server on loopback (``HttpClient``),
with the real embedding model and a real ``memory.db``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.errors import StoreError
from core.leakage import prompt_hash
from core.records import Attempt, Hint, Privileged, Task, Trajectory, Verdict, VerifierSpec
from memory.bank import MemoryBank, WorthRule, new_id
from memory.embed import embed
from memory.items import Case, LessonOrigin
from memory.retrieval import Query, RetrievalRule, retrieve
from orchestrator.config import Config, MemoryConfig
from orchestrator.recall import MemorySession

CHROMA = str(Path(sys.executable).parent / "chroma")
LOOPBACK = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    """A real chromadb server on loopback, for this module's ``http`` tests."""
    port = _free_port()
    log = tmp_path_factory.mktemp("chroma-log") / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([CHROMA, "run", "--path", str(tmp_path_factory.mktemp("chroma-data")),
                                 "--host", LOOPBACK, "--port", str(port)], stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://{LOOPBACK}:{port}/api/v2/heartbeat", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"chroma run did not start: {log.read_text()[-2000:]}")
                time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(params=["persistent", pytest.param("http", marks=pytest.mark.allow_hosts([LOOPBACK]))])
def memory_config(request, tmp_path) -> Config:
    """A configuration whose memory uses one backend (the server is shared, so each test
    gets collections of its own)."""
    if request.param == "persistent":
        return Config(home=tmp_path / "home")
    port = request.getfixturevalue("chroma_server")
    return Config(home=tmp_path / "home", memory=MemoryConfig(
        backend="http", host=LOOPBACK, port=port, collection_prefix=f"t{uuid.uuid4().hex[:10]}"))


def _bank(config: Config, **kwargs) -> MemoryBank:
    m = config.memory
    return MemoryBank(config.home, backend=m.backend, host=m.host, port=m.port,
                      prefix=m.collection_prefix, **kwargs)


def _task(task_id: str, prompt: str, answer: str, family: str = "default") -> Task:
    return Task(id=task_id, prompt=prompt, family=family,
                verifier=VerifierSpec(type="numeric", params={"expected": answer}),
                privileged=Privileged(reference_answer=answer))


def _solved_after_hint(task: Task, hint: str, reply: str) -> Trajectory:
    answer = task.privileged.reference_answer
    attempts = [
        Attempt(index=1, messages=[], reply="Answer: 0", answer="0", model="m",
                verdict=Verdict(passed=False, score=0.0),
                hint=Hint(text=hint, source="model", author="m", policy="critique")),
        Attempt(index=2, messages=[], reply=reply, answer=answer, model="m",
                verdict=Verdict(passed=True, score=1.0)),
    ]
    return Trajectory(run_id="r1", task=task, attempts=attempts, outcome="solved", hint_policy="critique",
                      generator_model="m", critic_model="m", hint_model="m", stop_reason="verified")


def _case(task: Task, reply: str, trajectory_id: str | None = None) -> Case:
    return Case(id=new_id("case"), task_id=task.id, prompt=task.prompt, prompt_hash=prompt_hash(task.prompt),
                family=task.family, reply=reply, answer=reply.rsplit(" ", 1)[-1],
                trajectory_id=trajectory_id or uuid.uuid4().hex, run_id="r1", model="m")


ADD = _task("add/1", "What is 12 + 7?", "19")
SIMILAR = _task("add/2", "What is 15 + 4?", "19")
UNRELATED = _task("poem/1", "Write a haiku about the sea at night.", "-")


async def test_a_case_and_a_lesson_learned_on_a_task_come_back_for_a_similar_task_only(memory_config):
    session = MemorySession(_bank(memory_config), memory_config, learn=True)
    try:
        await session.learn(_solved_after_hint(
            ADD, "Add the ones digits first, then the tens. The answer is 19.", "12 + 7 = 19\nAnswer: 19"))
        similar = await session.retrieve(SIMILAR)
        assert similar.examples == [(ADD.prompt, "12 + 7 = 19\nAnswer: 19")]
        assert similar.lessons == ["Add the ones digits first, then the tens."]
        [case_id, lesson_id] = similar.ids
        assert case_id.startswith("c-") and lesson_id.startswith("l-")
        assert (await session.retrieve(UNRELATED)).ids == []
        assert (await session.retrieve(ADD)).ids == []  # never the task itself
        same_id = ADD.model_copy(update={"prompt": "What is 14 + 7?"})
        assert (await session.retrieve(same_id)).ids == []  # nor a case of the same task id
        other_family = SIMILAR.model_copy(update={"family": "other", "id": "x/1"})
        assert (await session.retrieve(other_family)).ids == []  # out of scope
    finally:
        session.close()


async def test_items_learned_on_an_evaluation_task_are_never_retrieved(memory_config):
    learner = MemorySession(_bank(memory_config), memory_config, learn=True)
    await learner.learn(_solved_after_hint(ADD, "Add the ones digits first, then the tens.",
                                           "12 + 7 = 19\nAnswer: 19"))
    learner.close()
    guarded = MemorySession(_bank(memory_config), memory_config, learn=False,
                            exclude={prompt_hash("  what is 12 +   7?")})  # the same prompt, reformatted
    try:
        assert (await guarded.retrieve(SIMILAR)).ids == []
    finally:
        guarded.close()


def test_near_duplicate_lessons_merge_and_a_second_family_makes_them_general(memory_config):
    with _bank(memory_config) as bank:
        def origin(task: Task) -> LessonOrigin:
            return LessonOrigin(trajectory_id=uuid.uuid4().hex, task_id=task.id, prompt=task.prompt,
                                prompt_hash=prompt_hash(task.prompt), family=task.family)

        first = bank.add_lesson("Add the ones digits first, then the tens.", origin(ADD),
                                source="model", author="m", answers=["19"])
        again = bank.add_lesson("Add the ones digits first and then the tens.", origin(SIMILAR),
                                source="person", author="ada", answers=["19"])
        assert (first.outcome, again.outcome) == ("added", "merged")
        assert again.lesson.id == first.lesson.id and again.lesson.count == 2
        assert again.lesson.source == "person"  # a person's word outranks a model's
        assert again.lesson.scope == "default"
        chain = _task("chain/1", "State the final answer: 60 + 93 - 16 =", "137", family="chain_sum")
        wider = bank.add_lesson("Add the ones digits first, then the tens!", origin(chain),
                                source="model", author="m", answers=["137"])
        assert wider.outcome == "merged" and wider.lesson.scope == "general"
        other = bank.add_lesson("Write the poem in three lines.", origin(UNRELATED),
                                source="model", author="m", answers=[])
        assert other.outcome == "added" and other.lesson.id != first.lesson.id
        assert bank.counts()["lessons"] == {"active": 2}


def test_a_lesson_that_gives_the_answer_away_is_refused_and_not_stored(memory_config):
    with _bank(memory_config) as bank:
        origin = LessonOrigin(trajectory_id="t1", task_id=ADD.id, prompt=ADD.prompt,
                              prompt_hash=prompt_hash(ADD.prompt), family="default")
        result = bank.add_lesson("Remember the total is 19.", origin, source="model", author="m",
                                 answers=["19"])
        assert result.outcome == "refused" and "19" in result.reason
        assert bank.items("lesson") == [] and bank.counts()["index_entries"] == 0


def test_items_that_do_not_help_are_demoted_then_retired_then_pruned(memory_config):
    rule = WorthRule(min_uses=3, demote_below=-0.1, retire_below=-0.3)
    with _bank(memory_config, worth_rule=rule) as bank:
        helpful, useless = _case(ADD, "Answer: 19"), _case(SIMILAR, "Answer: 19")
        assert bank.add_case(helpful) and bank.add_case(useless)
        assert not bank.add_case(helpful.model_copy(update={"id": "c-dup"}))  # same trajectory
        for i in range(4):  # tasks without either item: half solved at the first attempt
            bank.record_outcome(f"base{i}", "r1", "default", i % 2 == 0, [])
        for i in range(3):
            bank.record_outcome(f"h{i}", "r1", "default", True, [helpful.id])
            bank.record_outcome(f"u{i}", "r1", "default", False, [useless.id])
        good, bad = bank.worth(helpful.id), bank.worth(useless.id)
        assert (good.uses, good.wins, bad.uses, bad.wins) == (3, 3, 3, 0)
        # Baseline for each: the 4 base trajectories and the other item's 3 (5/7 for the
        # useless one, 2/7 for the helpful one).
        assert good.baseline_n == bad.baseline_n == 7
        assert good.lift == pytest.approx(1 - 2 / 7, abs=1e-3) and good.status == "active"
        assert bad.lift == pytest.approx(-5 / 7, abs=1e-3) and bad.status == "retired"
        assert bank.status(useless.id) == "retired"
        [vector] = embed([SIMILAR.prompt])
        found = retrieve(bank, vector, Query("add/9", "h", "default"), RetrievalRule(cases_k=4))
        assert [c.id for c, _ in found.cases] == [helpful.id]  # a retired item is not retrieved
        bank.record_outcome("h0", "r1", "default", False, [helpful.id])  # logged once per trajectory
        assert bank.worth(helpful.id).uses == 3
        assert bank.prune() == [useless.id]
        assert bank.get(useless.id) is None and bank.get(helpful.id) is not None
        assert bank.counts()["index_entries"] == 1


def test_a_write_interrupted_before_the_index_is_repaired_at_the_next_open(memory_config, monkeypatch):
    with _bank(memory_config) as bank:
        assert bank.add_case(_case(ADD, "Answer: 19"))

        def fail(*args, **kwargs):
            raise StoreError("index down")

        monkeypatch.setattr(bank.index, "upsert", fail)
        with pytest.raises(StoreError):
            bank.add_case(_case(SIMILAR, "Answer: 19"))
        assert bank.unindexed() == 1 and bank.index.count("cases") == 1
    with _bank(memory_config) as reopened:
        assert reopened.repaired == 1 and reopened.unindexed() == 0
        assert reopened.index.count("cases") == 2
        [vector] = embed([SIMILAR.prompt])
        assert {i.task_id for i, _, _ in reopened.nearest("case", vector, 5)} == {"add/1", "add/2"}


def test_reindex_rebuilds_the_same_search_results(memory_config):
    with _bank(memory_config) as bank:
        for i in range(6):
            task = _task(f"add/{i}", f"What is {i} + {2 * i + 3}?", str(3 * i + 3))
            bank.add_case(_case(task, f"Answer: {3 * i + 3}"))
        [vector] = embed(["What is 4 + 9?"])
        before = [(i.id, round(s, 5)) for i, _, s in bank.nearest("case", vector, 4)]
        assert bank.reindex() == 6
        assert [(i.id, round(s, 5)) for i, _, s in bank.nearest("case", vector, 4)] == before


def test_concurrent_learning_of_the_same_case_and_lesson_stores_each_once(tmp_path):
    """Duplicate tasks learned at once (a concurrent run, one thread each) once raced
    between the duplicate check and the insert. A slowed real embedder widens that window."""
    def slow_embed(texts):
        time.sleep(0.05)
        return embed(texts)

    def origin(i: int) -> LessonOrigin:
        return LessonOrigin(trajectory_id=f"t{i}", task_id=f"add/{i}", prompt=ADD.prompt,
                            prompt_hash=prompt_hash(ADD.prompt), family="default")

    with MemoryBank(tmp_path / "home", embedder=slow_embed) as bank, ThreadPoolExecutor(8) as pool:
        stored = list(pool.map(lambda i: bank.add_case(_case(ADD, "12 + 7 = 19\nAnswer: 19", f"t{i}")),
                               range(8)))
        lessons = list(pool.map(lambda i: bank.add_lesson(
            "Add the ones digits first, then the tens.", origin(i), source="model", author="m",
            answers=["19"]), range(8)))
        assert sorted(stored) == [False] * 7 + [True]
        assert sorted(r.outcome for r in lessons) == ["added"] + ["merged"] * 7
        [(lesson, _status)] = bank.items("lesson")
        assert lesson.count == 8  # no merge overwrote another's origin
        assert bank.counts()["index_entries"] == 1 + 1 + 8  # one case, the lesson text, 8 prompts
