"""Job runs in this process: improve with a budget, a signal, a failure, and the report
of what the runs did. Scripted models answer (the student of tests/test_improve.py:
wrong alone, right after a hint, right alone with an adapter); a real tiny model is
trained; the real registry, stores and job store record everything. (Real worker
processes are in tests/test_worker.py; the embedded model in tests/test_schedule_e2e.py.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from pathlib import Path

import pytest

from finetune.registry import AdapterRegistry
from memory.jobs import JobRun, open_jobs
from memory.store import open_store
from orchestrator.config import Config
from orchestrator.evaluate import EVAL_STORE
from orchestrator.jobrun import run_job
from orchestrator.plots import CHAMPION_LABEL, figures, solved_at_outcomes
from orchestrator.report import gather, memory_worth
from orchestrator.report_page import write
from orchestrator.schedule import add_job
from orchestrator.worker import graceful_stop
from tests.support import make_trajectory
from tests.test_improve import add_task, mul_task, roles, student

pytestmark = pytest.mark.usefixtures("one_thread")

STAGES = ["evaluating", "collecting", "distilling", "evaluating", "measuring", "collecting",
          "distilling", "evaluating", "measuring"]
"""The first word of each stage improve announces, in order, for two rounds."""


@pytest.fixture(scope="module")
def job_files(tmp_path_factory, tiny_base) -> Path:
    """A selftaught.toml (the tiny model, quick training, two rounds) and the suites."""
    root = tmp_path_factory.mktemp("job")
    (root / "selftaught.toml").write_text(
        f'[models]\ngenerator = "local/{tiny_base}"\n'
        "[loop]\nmax_attempts = 2\nmax_resamples = 0\n"
        "[distill.train]\nmax_steps = 3\nbatch_size = 4\nlearning_rate = 0.005\nlogging_steps = 1\n"
        "[improve]\nrounds = 2\nmargin = 0.1\ntolerance = 0.0\ncollect = \"reference\"\nconfidence = 0.9\n")
    for name, tasks in [("train", [add_task(i) for i in range(6)]),
                        ("holdout", [add_task(i) for i in range(20, 24)]),
                        ("retention", [mul_task(i) for i in range(3)])]:
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps(t.model_dump(mode="json")) + "\n" for t in tasks))
    return root


def new_job(job_files: Path, home: Path, max_tokens: int | None = None) -> Config:
    config = Config(home=home)
    add_job(config, "nightly", cron="0 3 * * *", every=None, after_trajectories=None,
            max_minutes=None, max_tokens=max_tokens, max_usd=None,
            improve_params={"spec": str(job_files / "train.jsonl"),
                            "holdout": str(job_files / "holdout.jsonl"),
                            "retention": str(job_files / "retention.jsonl")},
            improve_argv=["train.jsonl", "--holdout", "holdout.jsonl", "--retention", "retention.jsonl"],
            config_file=job_files / "selftaught.toml")
    return config


def run(config: Config, stop: threading.Event | None = None, **student_kwargs) -> JobRun:
    models, _ = roles(student(learned={"add"}, **student_kwargs))
    return run_job(config, "nightly", cause="manual", stop=stop or threading.Event(), models=models)


@pytest.fixture(scope="module")
def finished(job_files, tmp_path_factory) -> tuple[Config, JobRun]:
    """A job run with no budget: round 1 promotes a0001, round 2 keeps it."""
    config = new_job(job_files, tmp_path_factory.mktemp("finished") / "home")
    return config, run(config)


def test_a_finished_run_is_recorded_with_its_figures_and_every_token(finished):
    config, done = finished
    assert (done.outcome, done.reason, done.rounds) == ("done", "", 2)
    assert [s.stage.split()[0] for s in done.stages] == STAGES
    assert [s.round for s in done.stages] == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    first, second = done.adapters
    assert (first.adapter, first.holdout_before, first.holdout_after, first.promoted) == ("a0001", 0.0, 1.0, True)
    assert (first.retention_before, first.retention_after) == (1.0, 1.0)
    assert (second.adapter, second.holdout_before, second.holdout_after, second.promoted) == ("a0002", 1.0, 1.0, False)
    assert done.promoted == ["a0001"] and (done.champion_before, done.champion_after) == (None, "a0001")
    # One ledger: every model call of the run, and nothing else. Each trajectory counts its
    # own calls, so the ledger equals the tokens of every trajectory the run stored.
    with open_store(config.home) as store, open_store(config.home, EVAL_STORE) as evals:
        stored = sum(t.tokens for s in (store, evals) for t in s.trajectories())
        assert done.trajectories_after == store.count() == 12 and done.trajectories_before == 0
    assert done.tokens == stored > 0 and done.cost_usd == 0.0
    assert sum(s.tokens for s in done.stages) == done.tokens
    assert next(s for s in done.stages if s.stage == "distilling").tokens == 0
    with open_jobs(config.home) as jobs:
        assert jobs.runs("nightly") == [done]
    log = Path(done.log).read_text()
    assert all(s.stage in log for s in done.stages) and "done; 2 round(s), promoted a0001" in log


def test_a_run_over_its_token_budget_stops_at_a_stage_boundary_without_promoting(finished, job_files, tmp_path):
    _, unlimited = finished
    # The budget is what the run spent up to the end of round 1's collection: the run
    # stops there, before distilling. Unlimited, that round promoted a0001.
    budget = sum(s.tokens for s in unlimited.stages[:2])
    config = new_job(job_files, tmp_path / "home", max_tokens=budget)
    stopped = run(config)
    assert stopped.outcome == "budget"
    assert stopped.reason == (f"token budget reached: {budget} tokens of {budget}; "
                              f"stopped before round 1: {unlimited.stages[2].stage}")
    assert stopped.rounds == 0 and stopped.adapters == [] and stopped.promoted == []
    assert [s.stage for s in stopped.stages] == [s.stage for s in unlimited.stages[:2]]
    assert AdapterRegistry(config.home).list() == [] and stopped.champion_after is None
    with open_store(config.home) as store:  # the finished collection stays, usable by a later run
        [collect] = store.list_runs()
        assert collect.status == "finished" and store.count() == 6
    with open_jobs(config.home) as jobs:
        assert jobs.runs("nightly")[0].outcome == "budget"


def test_a_budget_reached_in_round_two_keeps_round_ones_promotion_whole(finished, job_files, tmp_path):
    _, unlimited = finished
    # Up to a0001's evaluation, plus one token: the drift measurement (no tokens) and
    # the gate still run, round 2's collection starts, and the run stops after it.
    budget = sum(s.tokens for s in unlimited.stages[:4]) + 1
    config = new_job(job_files, tmp_path / "home", max_tokens=budget)
    stopped = run(config)
    assert (stopped.outcome, stopped.rounds, stopped.promoted) == ("budget", 1, ["a0001"])
    assert stopped.reason.endswith(f"stopped before round 2: {unlimited.stages[6].stage}")
    # The promotion happened right after its gate decision, inside round 1: the champion
    # carries the decision that promoted it, and round 2 trained nothing.
    [champion] = AdapterRegistry(config.home).list()
    assert champion.status == "champion" and champion.evaluation["gate"]["promote"] is True
    assert champion.evaluation["holdout"]["pass_at_1"] == 1.0


def test_a_signal_stops_the_run_after_the_current_stage(finished, job_files, tmp_path):
    config = new_job(job_files, tmp_path / "home")
    models, teacher = roles(student(learned={"add"}))
    generator = models.generator
    sent = []

    def reply(messages, params):  # SIGTERM this process while round 1 collects
        if any("Hint:" in m["content"] for m in messages) and not sent:
            sent.append(os.kill(os.getpid(), signal.SIGTERM))
        return generator.script(messages, params)

    models = type(models)(generator=type(generator)(reply, model_id="fake/student"),
                          critic=teacher, hint_giver=teacher, judge=teacher)
    stop, said = threading.Event(), []
    with graceful_stop(stop, said.append, hard=lambda: None):
        stopped = run_job(config, "nightly", cause="manual", stop=stop, models=models)
    assert sent and stop.is_set() and any("SIGTERM: stopping after the current stage" in s for s in said)
    assert stopped.outcome == "interrupted"
    assert stopped.reason == f"stopped by a signal before round 1: {finished[1].stages[2].stage}"
    assert AdapterRegistry(config.home).list() == []
    with open_store(config.home) as store:  # the stage that was running finished whole
        assert store.count() == 6 and store.list_runs()[0].status == "finished"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_a_failing_run_is_recorded_with_its_error_in_the_log(job_files, tmp_path):
    config = new_job(job_files, tmp_path / "home")
    broken = tmp_path / "broken.toml"
    broken.write_text("[models]\ngenerator = 'openai/gpt-4o-mini'\n")  # not trainable
    with open_jobs(config.home) as jobs:  # the config file changed after the job was added
        job = jobs.get_job("nightly")
        jobs.remove_job("nightly")
        jobs.add_job(job.model_copy(update={"improve": job.improve.model_copy(
            update={"config_file": str(broken)})}))
    failed = run(config)
    assert failed.outcome == "failed" and failed.reason.startswith("ConfigError: distill trains the local")
    assert "Traceback" in Path(failed.log).read_text() and failed.ended_at is not None


def test_the_report_draws_the_recorded_values(finished, tmp_path):
    config, done = finished
    report = write(gather(config), tmp_path / "report")

    # The page references every PNG written, and only those; each is a PNG.
    page = Path(report.files["html"]).read_text()
    referenced = set(re.findall(r"<img src='([^']+)'", page))
    written = {p.name for p in (tmp_path / "report").glob("*.png")}
    assert referenced == written == {"holdout.png", "retention.png", "solved_at.png", "spend.png"}
    assert all((tmp_path / "report" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in written)
    assert "http" not in page.replace("http-equiv", "")  # nothing from the network
    assert all(name in page for name in ("a0001", "a0002", done.run_id))

    drawn = {name: figure for name, _, figure in figures(report)}
    registry = AdapterRegistry(config.home)
    first, second = registry.get("a0001"), registry.get("a0002")

    # pass@1 per family: the base model, then each adapter, as the gate recorded them.
    for kind, family in (("holdout", "add"), ("retention", "mul")):
        lines = {line.get_label(): line for line in drawn[kind].axes[0].get_lines()}
        expected = [first.evaluation[kind]["incumbent_per_family"][family],
                    first.evaluation[kind]["per_family"][family],
                    second.evaluation[kind]["per_family"][family]]
        assert list(lines[family].get_ydata()) == expected
        assert [t.get_text() for t in drawn[kind].axes[0].get_xticklabels()] == ["base", "a0001", "a0002"]
        star = lines[CHAMPION_LABEL]  # the champion, marked where it stands
        assert list(star.get_xdata()) == [1] and list(star.get_ydata()) == [expected[1]]

    # Solved-at-attempt shares per hint policy, from the trajectory store itself.
    with open_store(config.home) as store:
        trajectories = store.trajectories()
    [bars] = drawn["solved_at"].axes[0].containers
    assert bars.get_label() == f"reference ({len(trajectories)})"
    outcomes = solved_at_outcomes(report.solved_at)
    counts = [sum(1 for t in trajectories if str(t.solved_at or "unsolved") == o) for o in outcomes]
    assert [b.get_height() for b in bars] == [c / len(trajectories) for c in counts]
    # Round 1 solved after a hint; round 2 collected with the champion, which knows sums.
    assert outcomes == ["1", "2", "unsolved"] and counts == [6, 6, 0]

    # Spend: the job run's tokens, and its minutes by kind of stage.
    tokens_ax, minutes_ax = drawn["spend"].axes
    assert [b.get_height() for b in tokens_ax.containers[0]] == [done.tokens]
    by_kind = {c.get_label(): c[0].get_height() for c in minutes_ax.containers}
    assert set(by_kind) == {"collecting", "distilling", "evaluating", "measuring"}
    assert by_kind["distilling"] == pytest.approx(sum(s.seconds for s in done.stages
                                                      if s.stage == "distilling") / 60)

    # --json gives the same numbers.
    data = json.loads(report.model_dump_json())
    assert data["holdout"]["series"][0]["values"] == [0.0, 1.0, 1.0] and data["champion"] == "a0001"
    assert data["job_runs"][0]["run_id"] == done.run_id and data["memory"] == []


def test_memory_worth_compares_attempt_one_with_and_without_each_item():
    def traj(i: int, lessons: list[str], first: bool):
        t = make_trajectory(i)
        attempts = t.attempts[1:] if first else t.attempts
        attempts = [a.model_copy(update={"index": k}) for k, a in enumerate(attempts, start=1)]
        return t.model_copy(update={"lessons": lessons, "attempts": attempts})

    rows = memory_worth([traj(0, ["carry the one"], True), traj(1, ["carry the one"], True),
                         traj(2, ["carry the one", "check signs"], False), traj(3, [], False),
                         traj(4, [], True), traj(5, [], False)])
    assert [(r.item, r.retrieved) for r in rows] == [("carry the one", 3), ("check signs", 1)]
    assert rows[0].first_attempt_with == pytest.approx(2 / 3)
    assert rows[0].first_attempt_without == pytest.approx(1 / 3) and rows[1].first_attempt_with == 0.0
    from orchestrator.plots import memory_figure

    ax = memory_figure(rows).axes[0]
    with_bars, without_bars = ax.containers
    assert [b.get_width() for b in with_bars] == [2 / 3, 0.0]
    assert [b.get_width() for b in without_bars] == pytest.approx([1 / 3, 1 / 3])
