"""The improve cycle's logic: scripted models answer, a real tiny model is trained,
the real registry and stores record everything. (The real embedded model runs an
improve round through the CLI in tests/test_improve_e2e.py.)

The scripted generator plays a student who is wrong alone, right after a hint, and
right alone when an adapter is applied to the families named in ``learned``.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from agents.testing import ScriptedChatModel
from core.errors import ConfigError
from finetune.registry import AdapterRegistry
from core.records import Privileged, Task, VerifierSpec
from memory.store import open_store
from orchestrator.config import (
    Config, DistillConfig, ImproveConfig, LoopConfig, ModelsConfig, with_overrides,
)
from orchestrator.evaluate import EVAL_STORE
from orchestrator.improve import Suites, improve
from orchestrator.runner import RoleModels
from tests.support import QUICK, make_task

pytestmark = pytest.mark.usefixtures("one_thread")


def mul_task(i: int) -> Task:
    return Task(id=f"mul/{i}", prompt=f"What is {i} * 3?", family="mul",
                verifier=VerifierSpec(type="exact", params={"expected": str(3 * i)}),
                privileged=Privileged(reference_answer=str(3 * i)))


def add_task(i: int) -> Task:
    task = make_task(i)
    return task.model_copy(update={"privileged": Privileged(reference_answer=str(2 * i + 7))})


def student(learned: set[str], forgets: set[str] = frozenset()) -> ScriptedChatModel:
    def reply(messages, params) -> str:
        prompt = messages[1]["content"]
        if match := re.search(r"What is (\d+) \+", prompt):
            family, right = "add", int(match.group(1)) * 2 + 7
        else:
            family, right = "mul", int(re.search(r"What is (\d+) \*", prompt).group(1)) * 3
        hinted = any("Hint:" in m["content"] for m in messages[2:] if m["role"] == "user")
        if params.adapter is not None and family in forgets:
            return f"Answer: {right + 1}"
        if family == "mul" or hinted or (params.adapter is not None and family in learned):
            return f"{right} it is.\nAnswer: {right}"
        return f"Answer: {right + 1}"

    return ScriptedChatModel(reply, model_id="fake/student")


def roles(generator: ScriptedChatModel) -> tuple[RoleModels, ScriptedChatModel]:
    teacher = ScriptedChatModel(lambda messages, params: "Look at the correct answer.",
                                model_id="fake/teacher")
    return RoleModels(generator=generator, critic=teacher, hint_giver=teacher, judge=teacher), teacher


def config(tmp_path, tiny_base, rounds: int) -> Config:
    return Config(home=tmp_path / "home",
                  models=ModelsConfig(generator=f"local/{tiny_base}"),
                  loop=LoopConfig(max_attempts=2, max_resamples=0),
                  distill=DistillConfig(train=QUICK),
                  improve=ImproveConfig(rounds=rounds, margin=0.1, tolerance=0.0,
                                        collect="reference", confidence=0.9))


def suites() -> Suites:
    return Suites(train_spec="train", train=[add_task(i) for i in range(6)],
                  holdout_spec="holdout", holdout=[add_task(i) for i in range(20, 24)],
                  retention_spec="retention", retention=[mul_task(i) for i in range(5)])


async def test_a_round_that_helps_is_promoted_and_a_round_that_does_not_is_kept(tmp_path, tiny_base):
    cfg = config(tmp_path, tiny_base, rounds=2)
    models, teacher = roles(student(learned={"add"}))
    report = await improve(cfg, suites(), models=models)

    first, second = report.rounds
    assert (first.train_solved, first.train_total) == (6, 6)  # every task, after a hint
    assert (first.holdout_before, first.holdout_after) == (0.0, 1.0)
    assert (first.retention_before, first.retention_after) == (1.0, 1.0)
    assert first.promoted and first.adapter == "a0001" and "0.00 -> 1.00" in first.reason
    # Round 2's candidate ties the new champion: below the margin, so it stays a candidate.
    assert (second.holdout_before, second.holdout_after) == (1.0, 1.0)
    assert not second.promoted and second.adapter == "a0002" and "margin" in second.reason
    assert report.promoted_any and report.champion == "a0001"
    assert set(first.seconds) == {"collect", "distill", "eval", "drift"}

    registry = AdapterRegistry(cfg.home)
    champion, candidate = registry.get("a0001"), registry.get("a0002")
    assert (champion.status, candidate.status) == ("champion", "candidate")
    assert champion.base_model == f"local/{tiny_base}" and champion.method == "sft"
    gate = champion.evaluation["gate"]
    assert gate["promote"] is True and gate["margin"] == 0.1
    assert champion.evaluation["holdout"]["pass_at_1"] == 1.0
    assert champion.evaluation["holdout"]["incumbent"] == "none"
    assert candidate.evaluation["holdout"]["incumbent"] == "a0001"
    # The dataset: round 1 learned from its 6 solved tasks; round 2 read both rounds'
    # trajectories, one example per task (the first found), never an evaluation task.
    assert champion.dataset.counts_per_family == {"add": 6}
    assert candidate.dataset.counts_per_family == {"add": 6}
    assert candidate.dataset.trajectory_ids == champion.dataset.trajectory_ids
    rows = [json.loads(line) for line in open(champion.dataset.path)]
    assert {r["task_id"] for r in rows} == {f"add/{i}" for i in range(6)}
    assert all("Hint" not in m["content"] for r in rows for m in r["prompt"])
    assert all(r["completion"][0]["content"].endswith(f"Answer: {int(r['task_id'][4:]) * 2 + 7}")
               for r in rows)

    # Collection used reference hints (the teacher saw the answer) and, in round 2,
    # the champion adapter; evaluation trajectories never reached the training store.
    assert any("Correct answer:" in c.messages[-1]["content"] for c in teacher.calls)
    with open_store(cfg.home) as store:
        runs = {r.run_id: r for r in store.list_runs()}
        assert set(runs) == {first.collect_run_id, second.collect_run_id}
        round2 = store.trajectories(run_id=second.collect_run_id)
        assert all(t.attempts[0].adapter and t.attempts[0].adapter.endswith("a0001") for t in round2)
        assert all(t.hint_policy == "reference" for t in round2)
    with open_store(cfg.home, EVAL_STORE) as evals:
        # The champion before, then each candidate; a candidate whose weights equal an
        # evaluated adapter's (same rows, same seed) is read from the evaluation cache.
        same = [(registry.path(n) / "adapter_model.safetensors").read_bytes() for n in ("a0001", "a0002")]
        assert len(evals.list_runs()) == 2 + 2 * (2 if same[0] != same[1] else 1)
    assert (second.seconds["eval"] < 1.0) == (same[0] == same[1])


async def test_with_start_champion_a_round_continues_the_champions_adapter(tmp_path, tiny_base):
    cfg = with_overrides(config(tmp_path, tiny_base, rounds=2), {"distill.start": "champion"})
    models, _ = roles(student(learned={"add"}))
    first, second = (await improve(cfg, suites(), models=models)).rounds
    assert first.promoted and second.adapter == "a0002"
    registry = AdapterRegistry(cfg.home)
    assert registry.get("a0001").started_from is None  # no champion yet: a new adapter
    assert registry.get("a0002").started_from == "a0001"
    assert registry.get("a0001").status == "champion"


def test_a_champion_of_another_base_model_is_not_continued(tmp_path, tiny_base):
    from finetune.registry import AdapterManifest
    from orchestrator.distill import distill
    from tests.test_finetune_registry import trained_dir
    from tests.test_finetune_train import make_trajectory

    cfg = with_overrides(config(tmp_path, tiny_base, rounds=1), {"distill.start": "champion"})
    registry = AdapterRegistry(cfg.home)
    registry.add("other", trained_dir(tmp_path, "other"),
                 AdapterManifest(name="other", base_model="local/other", method="sft"))
    registry.promote("other")
    with pytest.raises(ConfigError, match="trained on local/other"):
        distill(cfg, [make_trajectory(i) for i in range(4)])
    models, teacher = roles(student(learned={"add"}))
    with pytest.raises(ConfigError, match="trained on local/other"):
        asyncio.run(improve(cfg, suites(), models=models))
    assert models.generator.calls == [] and teacher.calls == []  # refused before any work
    assert [m.name for m in registry.list()] == ["other"]


async def test_a_candidate_that_forgets_the_retention_suite_is_not_promoted(tmp_path, tiny_base):
    cfg = config(tmp_path, tiny_base, rounds=1)
    models, _ = roles(student(learned={"add"}, forgets={"mul"}))
    report = await improve(cfg, suites(), models=models)

    [only] = report.rounds
    assert (only.holdout_before, only.holdout_after) == (0.0, 1.0)
    assert (only.retention_before, only.retention_after) == (1.0, 0.0)
    assert not only.promoted and "retention" in only.reason
    assert not report.promoted_any and report.champion is None
    manifest = AdapterRegistry(cfg.home).get("a0001")
    assert manifest.status == "candidate" and manifest.evaluation["gate"]["promote"] is False


async def test_rehearsal_replays_what_the_champion_gets_right_alone(tmp_path, tiny_base):
    cfg = config(tmp_path, tiny_base, rounds=1)
    models, _ = roles(student(learned={"add"}))
    # Four tasks the student answers right alone, one it gets wrong alone (and is never
    # hinted on: rehearsal is one attempt without help).
    rehearsal = [mul_task(i) for i in range(10, 14)] + [add_task(40)]
    report = await improve(cfg, suites().model_copy(update={
        "rehearsal_spec": "rehearsal", "rehearsal": rehearsal}), models=models)

    [only] = report.rounds
    assert (only.rehearsal_kept, only.rehearsal_total) == (4, 5)
    assert set(only.seconds) == {"collect", "rehearse", "distill", "eval", "drift"}
    manifest = AdapterRegistry(cfg.home).get("a0001")
    assert manifest.dataset.counts_per_family == {"add": 6, "mul": 4}
    [rehearsal_run] = manifest.evaluation["gate"]["rehearsal_runs"]
    with open_store(cfg.home) as store:
        replayed = store.trajectories(run_id=rehearsal_run)
    assert len(replayed) == 5
    assert all(len(t.attempts) == 1 and t.hint_policy == "none" for t in replayed)
    rows = [json.loads(line) for line in open(manifest.dataset.path)]
    assert {r["task_id"] for r in rows if r["family"] == "mul"} == {f"mul/{i}" for i in range(10, 14)}

    # A rehearsal task that is a retention task is refused before any model call.
    models, _ = roles(student(learned={"add"}))
    leaky = suites().model_copy(update={"rehearsal_spec": "r", "rehearsal": [mul_task(1)]})
    with pytest.raises(ConfigError, match=r"rehearsal task.*\(mul/1\)"):
        await improve(cfg, leaky, models=models)
    assert models.generator.calls == []


def sampler(learned: set[str]) -> ScriptedChatModel:
    """A student who, alone, gets an ``add`` task right on every third sample (in its own
    words each time) and, with an adapter trained on ``learned`` families, always."""
    calls: dict[str, int] = {}

    def reply(messages, params) -> str:
        prompt = messages[1]["content"]
        assert len(messages) == 2 and "Hint" not in prompt  # the evaluation prompt alone
        if match := re.search(r"What is (\d+) \+", prompt):
            family, right = "add", int(match.group(1)) * 2 + 7
        else:
            family, right = "mul", int(re.search(r"What is (\d+) \*", prompt).group(1)) * 3
        calls[prompt] = calls.get(prompt, 0) + 1
        if family == "mul" or (params.adapter is not None and family in learned):
            return f"{right} it is.\nAnswer: {right}"
        if params.temperature > 0 and calls[prompt] % 3 == 1:
            return f"Counting up, I get {right} (take {calls[prompt]}).\nAnswer: {right}"
        return f"Answer: {right + 1}"

    return ScriptedChatModel(reply, model_id="fake/sampler")


async def test_samples_rounds_train_on_the_models_own_verified_replies(tmp_path, tiny_base):
    cfg = with_overrides(config(tmp_path, tiny_base, rounds=2), {
        "improve.collect": "samples", "improve.samples": 6, "distill.start": "champion"})
    models, teacher = roles(sampler(learned={"add"}))
    first, second = (await improve(cfg, suites(), models=models)).rounds

    assert teacher.calls == []  # no critic, no hint-giver: nothing but the model's samples
    assert (first.collect, first.train_solved, first.train_pass_at_k) == ("samples", 6, 1.0)
    assert first.promoted and (first.wins, first.losses) == (4, 0)
    assert first.p_value == pytest.approx(1 / 16) and first.kl is not None and first.kl >= 0
    # 6 samples per task, 2 right (takes 1 and 4) and different: the cap keeps 2 per task.
    assert first.labels == {"self": 12} and first.rows == 12
    registry = AdapterRegistry(cfg.home)
    manifest = registry.get("a0001")
    assert manifest.dataset.counts_per_label == {"self": 12}
    with open_store(cfg.home) as store:
        collected = store.trajectories(run_id=first.collect_run_id)
        assert {len(t.attempts) for t in collected} == {6}
        assert all(t.hint_policy == "none" and a.hint is None for t in collected for a in t.attempts)
        verified = {a.reply for t in collected for a in t.attempts if a.verdict.passed}
        round2 = store.trajectories(run_id=second.collect_run_id)
    rows = [json.loads(line) for line in open(manifest.dataset.path)]
    assert {r["completion"][0]["content"] for r in rows} <= verified
    assert all("take" in r["completion"][0]["content"] for r in rows)

    # Round 2 samples from round 1's champion (which now always answers right) and, as it
    # continues that champion's adapter, trains on round 2's rows only.
    assert all(a.adapter and a.adapter.endswith("a0001") for t in round2 for a in t.attempts)
    assert second.train_pass_at_k == 1.0 and second.labels == {"self": 6}
    candidate = registry.get("a0002")
    assert candidate.started_from == "a0001"
    assert set(candidate.dataset.trajectory_ids) <= {t.id for t in round2}
    assert not second.promoted and "margin" in second.reason  # 1.00 -> 1.00


async def test_a_gold_round_is_labelled_gold_and_the_test_suite_is_scored_after(tmp_path, tiny_base):
    cfg = with_overrides(config(tmp_path, tiny_base, rounds=1), {"improve.collect": "gold"})
    models, teacher = roles(student(learned={"add"}))
    tested = suites().model_copy(update={"test_spec": "test",
                                         "test": [add_task(i) for i in range(40, 43)]})
    [only] = (await improve(cfg, tested, models=models)).rounds

    assert only.collect_run_id is None and only.collect == "gold"
    assert only.labels == {"gold": 6} and teacher.calls == []
    # The generator answered evaluation prompts only (holdout, retention, test): no
    # training task was ever put to it.
    asked = {c.messages[1]["content"] for c in models.generator.calls}
    assert not asked & {f"What is {i} + {i + 7}?\n\nEnd with the line 'Answer: <answer>'." for i in range(6)}
    manifest = AdapterRegistry(cfg.home).get("a0001")
    rows = [json.loads(line) for line in open(manifest.dataset.path)]
    assert [r["completion"][0]["content"] for r in rows] == [f"Answer: {2 * i + 7}" for i in range(6)]
    assert (only.test_before, only.test_after) == (0.0, 1.0)
    assert manifest.evaluation["test"]["incumbent"] == "none"
    assert manifest.evaluation["test"]["total"] == 3


async def test_a_feedback_round_learns_from_replies_found_without_the_answer(tmp_path, tiny_base):
    cfg = with_overrides(config(tmp_path, tiny_base, rounds=1), {"improve.collect": "feedback"})
    models, teacher = roles(student(learned={"add"}))  # right after any hint
    [only] = (await improve(cfg, suites(), models=models)).rounds
    assert only.labels == {"self": 6}
    with open_store(cfg.home) as store:
        collected = store.trajectories(run_id=only.collect_run_id)
    hints = [a.hint for t in collected for a in t.attempts if a.hint is not None]
    assert hints and all(h.policy == "feedback" and not h.used_privileged for h in hints)
    assert all("Correct answer" not in c.messages[-1]["content"] for c in teacher.calls)


async def test_nothing_solved_means_nothing_trained(tmp_path, tiny_base):
    cfg = config(tmp_path, tiny_base, rounds=1)
    never = ScriptedChatModel(lambda messages, params: "Answer: no idea", model_id="fake/lost")
    models, _ = roles(never)
    report = await improve(cfg, suites(), models=models)
    [only] = report.rounds
    assert only.train_solved == 0 and only.adapter is None and not only.promoted
    assert "nothing to distill" in only.reason
    assert AdapterRegistry(cfg.home).list() == []


async def test_training_tasks_that_are_evaluation_tasks_are_refused_before_any_work(tmp_path, tiny_base):
    cfg = config(tmp_path, tiny_base, rounds=1)
    models, _ = roles(student(learned={"add"}))
    leaky = suites().model_copy(update={"holdout": [add_task(0), add_task(30)]})
    with pytest.raises(ConfigError, match="add/0.*do not overlap"):
        await improve(cfg, leaky, models=models)
    remote = cfg.model_copy(update={"models": ModelsConfig(generator="openai/gpt-4o-mini")})
    with pytest.raises(ConfigError, match="local"):
        await improve(remote, suites(), models=models)
    assert models.generator.calls == []


def test_distill_command_trains_a_candidate_from_stored_trajectories(tmp_path, tiny_base):
    from tests.test_cli import cli
    from tests.test_finetune_train import make_trajectory

    from core.records import RunRecord

    (tmp_path / "selftaught.toml").write_text(
        f'[models]\ngenerator = "local/{tiny_base}"\n'
        "[distill.train]\nmax_steps = 2\nbatch_size = 4\n")
    with open_store(tmp_path / "home") as store:
        store.create_run(RunRecord(run_id="r", tasks_spec="t", settings={}, total=8))
        for i in range(8):
            store.add_trajectory(make_trajectory(i))
    result = cli("distill", "--name", "first", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads(result.stdout)
    assert manifest["name"] == "first" and manifest["status"] == "candidate"
    assert manifest["dataset"]["rows"] == 8 and manifest["hyper"]["max_steps"] == 2
    assert (tmp_path / "home" / "adapters" / "first" / "adapter_model.safetensors").is_file()

    # The same name again, and a holdout that overlaps the data: refused, nothing added.
    again = cli("distill", "--name", "first", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    tasks = tmp_path / "holdout.jsonl"
    tasks.write_text(json.dumps({"id": "h", "prompt": make_task(3).prompt, "answer": "13"}) + "\n")
    leaky = cli("distill", "--holdout", str(tasks), cwd=tmp_path)
    assert leaky.returncode == 2 and "add/3" in leaky.stderr
    assert [m.name for m in AdapterRegistry(tmp_path / "home").list()] == ["first"]

    # Answer-only completions: the reasoning is dropped, and the manifest says so.
    assert manifest["dataset"]["completion"] == "reply"
    with open(tmp_path / "selftaught.toml", "a") as toml:
        toml.write('[distill]\ncompletion = "answer"\n')
    short = cli("distill", "--name", "short", "--json", cwd=tmp_path)
    assert short.returncode == 0, short.stderr[-2000:]
    dataset = json.loads(short.stdout)["dataset"]
    assert dataset["completion"] == "answer"
    rows = [json.loads(line) for line in open(dataset["path"])]
    assert len(rows) == 8
    assert all(re.fullmatch(r"Answer: \S+", r["completion"][0]["content"]) for r in rows)

    # --start champion continues the champion's adapter; a bad value names the choices.
    assert cli("adapters", "promote", "first", cwd=tmp_path).returncode == 0
    cont = cli("distill", "--name", "cont", "--start", "champion", cwd=tmp_path)
    assert cont.returncode == 0, cont.stderr[-2000:]
    assert "continuing first" in cont.stdout
    assert AdapterRegistry(tmp_path / "home").get("cont").started_from == "first"
    bad = cli("distill", "--start", "best", cwd=tmp_path)
    assert bad.returncode == 2 and "distill.start" in bad.stderr and "champion" in bad.stderr


def test_scratch_of_a_killed_distill_is_swept_and_live_ones_are_kept(tmp_path):
    import os
    import subprocess
    import sys

    from orchestrator.distill import sweep_scratch

    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    dead = tmp_path / f".train-my-adapter-{dead_pid.pid}-k2j_x9"
    live = tmp_path / f".train-a0002-{os.getpid()}-abc123"
    unknown = tmp_path / ".train-a0003-qq7z"  # older name without a process id
    for directory in (dead, live, unknown):
        (directory / "adapter").mkdir(parents=True)
    assert sweep_scratch(tmp_path) == [dead]
    assert not dead.exists() and live.is_dir() and unknown.is_dir()


def test_the_round_table_shows_rehearsal_only_when_there_was_one(monkeypatch):
    import io

    from rich.console import Console

    import cli as cli_module
    from orchestrator.improve import ImproveReport, RoundReport

    def printed(**rehearsal) -> str:
        buffer = io.StringIO()
        monkeypatch.setattr(cli_module, "out", Console(file=buffer, width=200))
        round_ = RoundReport(round=1, train_solved=266, train_total=509, holdout_before=0.12,
                             holdout_after=0.38, retention_before=0.8, retention_after=0.9,
                             promoted=True, adapter="a0001", reason="holdout +0.264",
                             collect_run_id="improve-x", **rehearsal)
        cli_module._print_improve_report(ImproveReport(rounds=[round_], promoted_any=True,
                                                       champion="a0001"))
        return buffer.getvalue()

    with_rehearsal = printed(rehearsal_kept=33, rehearsal_total=46)
    assert "rehearsal kept" in with_rehearsal and "33/46" in with_rehearsal
    assert "266/509" in with_rehearsal and "champion: a0001" in with_rehearsal
    assert "rehearsal" not in printed()
