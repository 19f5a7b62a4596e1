"""Reliability figures: provider faults, kill -9 sweeps, corruption, concurrency, input at
scale. Every check drives the real ``selftaught`` command in subprocesses.

    uv run python benchmarks/bench_reliability.py [--only faults,kill-run,kill-improve,
        kill-session,kill-worker,corruption,concurrency,scale] [--points 20] [--seed 15]
        [--out results.json]

* faults: a loopback OpenAI-compatible server (tests/fake_provider.py) injects 429, 500,
  timeouts, truncated bodies, invalid JSON and resets at random into a 40-task run; then
  the server goes down for a second run, which is resumed once it is back.
* kill-run: ``run`` (fake server, 40 tasks, 2 attempts) killed with SIGKILL at random
  points, each followed by ``run --resume``.
* kill-improve: ``improve`` with a tiny local model (tests' ``build_tiny_base``) killed at
  random points in collection, training and evaluation, and inside the registry's writes
  (promotion) through the kill-on-replace hook; each followed by a rerun.
* kill-session: a scripted ``session`` (fake server, 10 tasks, memory on) killed with
  SIGKILL a random delay after a random task starts (or while it loads), each followed
  by ``session --resume`` with the rest of the script (the lines for tasks not yet
  recorded).
* kill-worker: a ``worker`` running a scheduled tiny ``improve`` job (as kill-improve)
  killed at random points in each stage and inside the registry's writes; each followed
  by the next worker, which records the dead job run and runs the job to the end.
* corruption: garbled pages, a garbage / truncated / empty file, a bad row, a deleted
  champion: what ``run`` says at start and what ``doctor --repair`` recovers.
* concurrency: two ``run``s on one data directory, and a ``run`` during ``improve``.
* scale: peak RSS and wall time of ``selftaught tasks`` on large or broken inputs.

Prints one line per check and writes everything to ``--out`` (JSON) for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fake_provider import FakeOpenAI  # noqa: E402
from tests.kill_harness import (JOB, add_worker_job, job_runs, kill_on_replace_env,  # noqa: E402
                                lost, registry_problems, rest_of_script, run_to_end,
                                run_worker_until_done, session_files, session_id,
                                start_and_kill, store_rows, tiny_improve)
from tests.support import SELFTAUGHT, build_tiny_base, jsonl  # noqa: E402

KEY = "sk-bench-" + "r" * 24
FAULT_KINDS = ("429", "500", "timeout", "truncate", "invalid_json", "reset")


def log(*parts) -> None:
    print(*parts, flush=True)


def fake_config(where: Path, *, retries: int = 3, attempts: int = 1, concurrency: int = 4) -> None:
    (where / "selftaught.toml").write_text(
        '[models]\ngenerator = "openai/fake"\ncritic = "openai/fake"\nhint = "openai/fake"\n'
        f"timeout_s = 5\nmax_retries = {retries}\nbackoff_s = 0.2\n"
        f'[loop]\nhints = "none"\nmax_attempts = {attempts}\n[run]\nconcurrency = {concurrency}\n')


def questions(where: Path, n: int, *, unsolvable_every: int = 0) -> Path:
    return jsonl(where / "tasks.jsonl", [
        {"id": f"q{i}", "prompt": f"Question {i}: what is 6 * 7?",
         "answer": 41 if unsolvable_every and i % unsolvable_every == 0 else 42} for i in range(n)])


def trajectories(home: Path) -> list[dict]:
    with sqlite3.connect(home / "selftaught.db") as conn:
        return [json.loads(r[0]) for r in conn.execute("SELECT record FROM trajectories")]


# -- faults ------------------------------------------------------------------------------


def bench_faults(work: Path, rng: random.Random) -> dict:
    fake_config(work)
    tasks = questions(work, 40)
    home = work / "home"
    env = {"SELFTAUGHT_HOME": str(home), "OPENAI_API_KEY": KEY}
    streak = {"n": 0}

    def schedule(number: int, body: dict) -> str:
        # A fault on ~35% of requests, never more than 3 in a row (max_retries = 3).
        if streak["n"] < 3 and rng.random() < 0.35:
            streak["n"] += 1
            return rng.choice(FAULT_KINDS)
        streak["n"] = 0
        return "ok"

    with FakeOpenAI(faults=schedule, hang_s=8) as server:
        started = time.monotonic()
        done = run_to_end(["run", str(tasks), "--json"], cwd=work,
                          env={**env, "OPENAI_BASE_URL": server.base_url})
        seconds = time.monotonic() - started
        summary = json.loads(done.stdout)
        injected = dict(server.injected)
        requests = len(server.requests)
        # A task whose call met a fault on every try (4 with 3 retries) is a task error;
        # the resume runs it again (the schedule keeps injecting faults).
        resumed = run_to_end(["run", "--resume", summary["run_id"], "--json"], cwd=work,
                             env={**env, "OPENAI_BASE_URL": server.base_url})
    recorded = [f for t in trajectories(home) for a in t["attempts"] for f in a["faults"]]
    kinds = Counter(next((k for k in ("RateLimit", "InternalServer", "no reply") if k in f), "other")
                    for f in recorded)
    final = json.loads(resumed.stdout)
    with sqlite3.connect(home / "selftaught.db") as conn:
        errors = [json.loads(r[0])["message"][:120] for r in conn.execute("SELECT record FROM task_errors")]
    result = {"tasks": 40, "requests": requests, "injected": injected,
              "injected_total": sum(injected.values()), "first_run": {
                  "exit": done.returncode, "task_errors": len(summary["errors"]),
                  "finished": summary["solved"] + summary["unsolved"], "seconds": round(seconds, 1)},
              "task_error_messages": errors,
              "after_resume": {"exit": resumed.returncode,
                               "finished": final["solved"] + final["unsolved"],
                               "injected_total": sum(server.injected.values())},
              "recorded_on_attempts": len(recorded), "recorded_kinds": dict(kinds)}
    log("faults:", result)

    # An outage: every call fails for a whole run, then the provider comes back.
    outage = work / "outage"
    outage.mkdir()
    fake_config(outage, retries=1)
    tasks = questions(outage, 20)
    state = {"down": True}
    with FakeOpenAI(faults=lambda n, body: "reset" if state["down"] else "ok") as server:
        oenv = {"SELFTAUGHT_HOME": str(outage / "home"), "OPENAI_API_KEY": KEY,
                "OPENAI_BASE_URL": server.base_url}
        down = run_to_end(["run", str(tasks), "--json"], cwd=outage, env=oenv)
        first = json.loads(down.stdout)
        state["down"] = False
        back = run_to_end(["run", "--resume", first["run_id"], "--json"], cwd=outage, env=oenv)
    second = json.loads(back.stdout)
    result["outage"] = {"exit_down": down.returncode, "errors_down": len(first["errors"]),
                        "not_started": first["unfinished"] - len(first["errors"]),
                        "stored_down": first["solved"] + first["unsolved"],
                        "exit_resume": back.returncode, "finished_after_resume":
                        second["solved"] + second["unsolved"]}
    log("outage:", result["outage"])
    return result


# -- kill run ----------------------------------------------------------------------------


def bench_kill_run(work: Path, rng: random.Random, points: int) -> dict:
    rows = []
    with FakeOpenAI(delay_s=0.3) as server:
        def setup(where: Path) -> tuple[Path, dict]:
            where.mkdir()
            fake_config(where, attempts=2, concurrency=4)
            env = {"SELFTAUGHT_HOME": str(where / "home"), "OPENAI_API_KEY": KEY,
                   "OPENAI_BASE_URL": server.base_url}
            return questions(where, 40, unsolvable_every=3), env

        # How long a run lasts after it prints its start line: kills fall within that.
        tasks, env = setup(work / "calibration")
        calibration = start_and_kill(["run", str(tasks), "--json"], cwd=work / "calibration",
                                     env=env, stage="tasks (", delay_s=10_000)
        span = calibration.after_stage_s
        log("kill-run: calibration", calibration.returncode, f"{span:.1f}s")
        for point in range(points):
            where = work / f"p{point}"
            tasks, env = setup(where)
            home = where / "home"
            delay = rng.uniform(0.05, 0.95) * span
            killed = start_and_kill(["run", str(tasks), "--json"], cwd=where, env=env,
                                    stage="tasks (", delay_s=delay)
            before = store_rows(home / "selftaught.db")
            listed = json.loads(run_to_end(["runs", "list", "--json"], cwd=where, env=env).stdout)["runs"]
            status = listed[0]["status"] if listed else None
            run_id = listed[0]["run_id"] if listed else None
            resumed = run_to_end(["run", "--resume", run_id, "--json"], cwd=where, env=env)
            after = store_rows(home / "selftaught.db")
            summary = json.loads(resumed.stdout)
            rows.append({"point": point, "delay_s": round(delay, 2), "killed": killed.killed,
                         "stored_at_kill": len(before), "status_after_kill": status,
                         "lost": lost(before, after), "stored_after": len(after),
                         "duplicated": len(after) - len(set(after.values())),
                         "resume_exit": resumed.returncode,
                         "finished": summary["solved"] + summary["unsolved"]})
            log("kill-run:", rows[-1])
    return {"span_s": round(span, 1), "points": rows}


# -- kill improve ------------------------------------------------------------------------


def bench_kill_improve(work: Path, rng: random.Random, points: int) -> dict:
    tiny = build_tiny_base(work / "tiny")
    args = tiny_improve(work, tiny)
    home = work / "home"
    env = {"SELFTAUGHT_HOME": str(home)}
    calibration = run_to_end(args, cwd=work, env=env)
    stage_s = json.loads(calibration.stdout)["rounds"][0]["seconds"]
    log("kill-improve: calibration", calibration.returncode, stage_s)
    plan: list[tuple[str, object]] = []
    stages = {"collection": ("round 1: collecting", stage_s["collect"]),
              "training": ("round 1: distilling", stage_s["distill"]),
              "evaluation": ("round 1: evaluating candidate", stage_s["eval"])}
    per_stage = max(points // 4, 1)
    for name in stages:
        plan += [(name, None)] * per_stage
    # Promotion: inside the registry's index writes (add=1, set_eval=2, promote=3), just
    # before or just after each.
    writes = [(n, when) for n in (1, 2, 3) for when in ("before", "after")]
    plan += [("promotion", writes[i % len(writes)]) for i in range(points - len(plan))]
    rows = []
    for point, (stage, write) in enumerate(plan):
        before = store_rows(home / "selftaught.db")
        if write is None:
            line, seconds = stages[stage]
            delay = rng.uniform(0.0, max(seconds, 0.2))
            killed = start_and_kill(args, cwd=work, env=env, stage=line, delay_s=delay)
            where = f"{line} +{delay:.1f}s"
        else:
            n, when = write
            killed = run_to_end(args, cwd=work, env={**env, **kill_on_replace_env(
                work / "hook", "registry.json", n, when)})
            where = f"registry.json write {n} ({'add set_eval promote'.split()[n - 1]}), {when}"
        at_kill = store_rows(home / "selftaught.db")
        problems = registry_problems(home)
        rerun = run_to_end(args, cwd=work, env=env)
        after = store_rows(home / "selftaught.db")
        rows.append({"point": point, "stage": stage, "where": where, "killed": killed.killed,
                     "last_stage_line": killed.stage, "registry_problems": problems,
                     "lost": lost(before, at_kill) + lost(at_kill, after),
                     "duplicated": len(after) - len(set(after.values())),
                     "rerun_exit": rerun.returncode})
        log("kill-improve:", rows[-1])
    return {"stage_seconds": stage_s, "points": rows}


# -- kill session ------------------------------------------------------------------------


def bench_kill_session(work: Path, rng: random.Random, points: int) -> dict:
    n = 10
    rows = []
    with FakeOpenAI(delay_s=0.2) as server:
        def setup(where: Path) -> tuple[list[str], list[dict], dict]:
            where.mkdir()
            tasks, lines = session_files(where, n)
            env = {"SELFTAUGHT_HOME": str(where / "home"), "OPENAI_API_KEY": KEY,
                   "OPENAI_BASE_URL": server.base_url}
            script = jsonl(where / "script.jsonl", lines)
            return ["session", str(tasks), "--script", str(script)], lines, env

        for point in range(points):
            where = work / f"p{point}"
            args, lines, env = setup(where)
            db = where / "home" / "selftaught.db"
            # A random task's start (or the session's, while the memory loads), then a
            # random delay: a failing task takes ~1.5 s (generate, critique, hint, ask,
            # generate again, record), a passing one ~0.4 s.
            task = rng.randrange(-1, n)
            stage = "session " if task < 0 else f"task q{task} ("
            delay = rng.uniform(0.0, 3.0 if task < 0 else 2.0)
            killed = start_and_kill(args, cwd=where, env=env, stage=stage, delay_s=delay)
            before = store_rows(db)
            sid = session_id(killed.stdout)
            listed = json.loads(run_to_end(["runs", "list", "--json"], cwd=where, env=env).stdout)["runs"]
            status = next((r["status"] for r in listed if r["run_id"] == sid), None)
            recorded = {t for run, t in before if run == sid}
            rest = jsonl(where / "rest.jsonl", rest_of_script(lines, recorded))
            resumed = run_to_end(["session", "--resume", str(sid), "--script", str(rest)],
                                 cwd=where, env=env)
            after = store_rows(db)
            listed = json.loads(run_to_end(["runs", "list", "--json"], cwd=where, env=env).stdout)["runs"]
            shown = [line.strip(" ─") for line in killed.stdout.splitlines() if line.strip(" ─")]
            rows.append({"point": point, "where": f"{stage.strip()} +{delay:.1f}s",
                         "killed": killed.killed, "last_shown": shown[-1][:60] if shown else None,
                         "recorded_at_kill": len(recorded), "status_after_kill": status,
                         "lost": lost(before, after),
                         "duplicated": len(after) - len(set(after.values())),
                         "resume_exit": resumed.returncode,
                         "resume_finished": f"session {sid} finished" in " ".join(resumed.stdout.split()),
                         "recorded_after": sum(1 for run, _ in after if run == sid),
                         "status_after_resume": next((r["status"] for r in listed if r["run_id"] == sid), None),
                         "memory_unlogged": _unlogged(where / "home", after.values())})
            log("kill-session:", rows[-1])
    return {"tasks": n, "points": rows}


def _unlogged(home: Path, trajectory_ids) -> int:
    """Stored trajectories whose outcome the vector memory never logged (learned from)."""
    with sqlite3.connect(f"file:{home / 'memory.db'}?mode=ro", uri=True) as conn:
        logged = {r[0] for r in conn.execute("SELECT trajectory_id FROM outcomes")}
    return sum(1 for tid in trajectory_ids if tid not in logged)


# -- kill worker -------------------------------------------------------------------------


def bench_kill_worker(work: Path, rng: random.Random, points: int) -> dict:
    from orchestrator.evaluate import EVAL_STORE

    tiny = build_tiny_base(work / "tiny")
    home = work / "home"
    env = {"SELFTAUGHT_HOME": str(home)}
    add_worker_job(work, tiny, env)
    calibration = run_worker_until_done(work, env)
    done = next(r for r in job_runs(home) if r.outcome == "done")
    seconds = {(s.round, s.stage.split(" (")[0].split(" a0")[0]): s.seconds for s in done.stages}
    log("kill-worker: calibration", calibration.returncode, seconds)
    # Later runs start from the champion the calibration promoted.
    stages = {"collection": ("round 1: collecting", seconds[(1, "collecting")]),
              "training": ("round 1: distilling", seconds[(1, "distilling")]),
              "evaluation": ("round 1: evaluating candidate", seconds[(1, "evaluating candidate")]
                             + seconds.get((1, "measuring drift from the base model"), 0)),
              "champion evaluation": ("evaluating the champion", seconds[(0, "evaluating the base model")])}
    # Promotion: inside the registry's index writes (add=1, set_eval=2, promote=3).
    writes = [(3, "after"), (1, "before"), (2, "after"), (3, "before"), (1, "after"), (2, "before")]
    kinds = ["collection", "promotion", "training", "evaluation", "champion evaluation"]
    plan = [kinds[i % len(kinds)] for i in range(points)]
    stores = [home / "selftaught.db", home / EVAL_STORE]
    rows = []
    for point, stage in enumerate(plan):
        before = [store_rows(db) for db in stores]
        earlier = {r.run_id for r in job_runs(home)}
        if stage == "promotion":
            n, when = writes[plan[:point].count("promotion") % len(writes)]
            hook = kill_on_replace_env(work / "hook", "registry.json", n, when)
            # The hook kills the worker inside the write; if it never came, we do after the run.
            killed = start_and_kill(["worker"], cwd=work, env={**env, **hook},
                                    stage=f"job {JOB}: done;", delay_s=0)
            where = f"registry.json write {n} ({'add set_eval promote'.split()[n - 1]}), {when}"
        else:
            line, span = stages[stage]
            delay = rng.uniform(0.0, max(span, 0.2))
            killed = start_and_kill(["worker"], cwd=work, env=env, stage=line, delay_s=delay)
            where = f"{line} +{delay:.1f}s"
        at_kill = [store_rows(db) for db in stores]
        problems = registry_problems(home)
        run = next((r for r in job_runs(home) if r.run_id not in earlier), None)
        shown = json.loads(run_to_end(["schedule", "show", JOB, "--json"], cwd=work, env=env).stdout)
        shown_outcome = next((r["outcome"] for r in shown["runs"] if run and r["run_id"] == run.run_id), None)
        listed = json.loads(run_to_end(["runs", "list", "--json"], cwd=work, env=env).stdout)["runs"]
        nxt = run_worker_until_done(work, env)
        after = [store_rows(db) for db in stores]
        runs = job_runs(home)
        recorded = next((r for r in runs if run and r.run_id == run.run_id), None)
        rows.append({"point": point, "stage": stage, "where": where, "killed": killed.killed,
                     "ended_by_hook": stage == "promotion" and f"job {JOB}: done;" not in killed.stderr,
                     "last_stage_line": killed.stage,
                     "job_run_stored_at_kill": run.outcome if run else None,
                     "job_run_shown_at_kill": shown_outcome,
                     "runs_listed_running_at_kill": sum(r["status"] == "running" for r in listed),
                     "registry_problems": problems + registry_problems(home),
                     "lost": sum(lost(b, k) + lost(k, a) for b, k, a in zip(before, at_kill, after)),
                     "duplicated": sum(len(a) - len(set(a.values())) for a in after),
                     "next_worker_exit": nxt.returncode,
                     "next_run_done": f"job {JOB}: done;" in nxt.stderr,
                     "job_run_recorded_after": recorded.outcome if recorded else None,
                     "job_runs_left_running": sum(r.outcome == "running" for r in runs)})
        log("kill-worker:", rows[-1])
    return {"stage_seconds": {k: v[1] for k, v in stages.items()}, "points": rows}


# -- corruption --------------------------------------------------------------------------


def bench_corruption(work: Path, rng: random.Random) -> dict:
    from tests.support import make_trajectory
    from core.records import RunRecord
    from memory.store import open_store

    def filled(home: Path, n: int = 200) -> Path:
        with open_store(home) as store:
            store.create_run(RunRecord(run_id="r", tasks_spec="t", settings={}, total=n))
            for i in range(n):
                store.add_trajectory(make_trajectory(i))
        return home / "selftaught.db"

    cases = []
    for k, (start, length) in enumerate([(0.3, 0.02), (0.5, 0.05), (0.7, 0.1), (0.9, 0.05), (0.2, 0.3)]):
        where = work / f"garble{k}"
        where.mkdir()
        db = filled(where / "home")
        size = db.stat().st_size
        with db.open("r+b") as handle:
            handle.seek(int(size * start) // 4096 * 4096)
            handle.write(os.urandom(max(int(size * length) // 4096, 1) * 4096))
        cases.append(_corruption_case(where, f"garbled pages at {start:.0%} ({length:.0%} of the file)", 200))
    for kind in ("garbage checkpoints.db", "truncated checkpoints.db", "zero-byte selftaught.db",
                 "one bad row", "champion directory deleted"):
        where = work / kind.replace(" ", "-")
        where.mkdir()
        home = where / "home"
        db = filled(home)
        if kind == "garbage checkpoints.db":
            (home / "checkpoints.db").write_bytes(os.urandom(64 * 1024))
        elif kind == "truncated checkpoints.db":
            with sqlite3.connect(home / "checkpoints.db") as conn:
                conn.execute("CREATE TABLE w (b BLOB)")
                conn.executemany("INSERT INTO w VALUES (?)", [(os.urandom(4000),) for _ in range(100)])
            with (home / "checkpoints.db").open("r+b") as handle:
                handle.truncate((home / "checkpoints.db").stat().st_size // 3)
        elif kind == "zero-byte selftaught.db":
            db.write_bytes(b"")
        elif kind == "one bad row":
            with sqlite3.connect(db) as conn:
                conn.execute("UPDATE trajectories SET record = 'garbage' WHERE seq = 50")
        else:
            from finetune.registry import AdapterRegistry
            from tests.support import manifest, trained_dir

            registry = AdapterRegistry(home)  # trained for the generator used below
            registry.add("a0001", trained_dir(where, "one"),
                         manifest().model_copy(update={"base_model": "openai/fake"}))
            registry.promote("a0001")
            shutil.rmtree(registry.root / "a0001")
        cases.append(_corruption_case(where, kind, 200))
    for case in cases:
        log("corruption:", case)
    return {"cases": cases}


def _corruption_case(where: Path, kind: str, stored: int) -> dict:
    fake_config(where)
    tasks = questions(where, 1)
    with FakeOpenAI() as server:
        env = {"SELFTAUGHT_HOME": str(where / "home"), "OPENAI_API_KEY": KEY,
               "OPENAI_BASE_URL": server.base_url}
        start = run_to_end(["run", str(tasks)], cwd=where, env=env)
    text = " ".join(start.stderr.split())
    listed = run_to_end(["runs", "list", "--json"], cwd=where, env=env)
    exported = run_to_end(["memory", "export", str(where / "out.jsonl")], cwd=where, env=env)
    repaired = run_to_end(["doctor", "--repair", "--json"], cwd=where, env=env)
    report = json.loads(repaired.stdout) if repaired.stdout.strip() else {}
    check = run_to_end(["doctor", "--json"], cwd=where, env=env)
    db = where / "home" / "selftaught.db"
    kept = store_rows(db) if db.exists() and db.stat().st_size else {}
    return {"kind": kind, "run_exit": start.returncode, "traceback": "Traceback" in start.stderr,
            "names_file": any(n in text for n in ("selftaught.db", "checkpoints.db", "a0001")),
            "names_repair": "doctor --repair" in text or "adapters rollback" in text,
            "runs_list_exit": listed.returncode, "export_exit": exported.returncode,
            "export_warns_skipped": "skipped" in exported.stderr,
            "repair_exit": repaired.returncode, "healthy_after": check.returncode == 0,
            "repaired": [f.get("repaired") for f in report.get("findings", [])][:3],
            "rows_before": stored, "rows_after_repair": len(kept)}


# -- concurrency -------------------------------------------------------------------------


def bench_concurrency(work: Path) -> dict:
    fake_config(work, concurrency=8)
    specs = [jsonl(work / f"t{k}.jsonl", [{"id": f"k{k}-{i}", "prompt": f"Set {k} q {i}?", "answer": 42}
                                         for i in range(100)]) for k in (1, 2)]
    home = work / "home"
    with FakeOpenAI(delay_s=0.02) as server:
        env = {**os.environ, "SELFTAUGHT_HOME": str(home), "OPENAI_API_KEY": KEY,
               "OPENAI_BASE_URL": server.base_url}
        procs = [subprocess.Popen([SELFTAUGHT, "run", str(s), "--json"], cwd=work, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in specs]
        outs = [p.communicate() for p in procs]
    two_runs = {"exits": [p.returncode for p in procs],
                "locked_messages": sum(err.count("locked") for _, err in outs),
                "stored": len(store_rows(home / "selftaught.db")), "expected": 200}
    log("concurrency two runs:", two_runs)

    # A run during improve, on one data directory.
    imp = work / "improve"
    imp.mkdir()
    tiny = build_tiny_base(imp / "tiny")
    args = tiny_improve(imp, tiny)
    spec = jsonl(imp / "run.jsonl", [{"id": f"r{i}", "prompt": f"Run q {i}?", "answer": 42} for i in range(100)])
    with FakeOpenAI(delay_s=0.05) as server:
        env = {**os.environ, "SELFTAUGHT_HOME": str(imp / "home"), "OPENAI_API_KEY": KEY,
               "OPENAI_BASE_URL": server.base_url}
        improving = subprocess.Popen([SELFTAUGHT, *args], cwd=imp, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        time.sleep(5)
        running = subprocess.run([SELFTAUGHT, "run", str(spec), "--model", "openai/fake", "--json"],
                                 cwd=imp, env=env, capture_output=True, text=True)
        improve_out, improve_err = improving.communicate()
    rows = store_rows(imp / "home" / "selftaught.db")
    during = {"improve_exit": improving.returncode, "run_exit": running.returncode,
              "locked_messages": improve_err.count("locked") + running.stderr.count("locked"),
              "run_rows": sum(1 for (_, task) in rows if task.startswith("r")),
              "collect_rows": sum(1 for (_, task) in rows if task.startswith("tr"))}
    log("concurrency run during improve:", during)
    return {"two_runs": two_runs, "run_during_improve": during}


# -- scale -------------------------------------------------------------------------------


def measured(args: list[str], cwd: Path) -> dict:
    """Exit code, wall seconds and peak RSS (MB) of ``selftaught ARGS`` alone in a child."""
    probe = ("import json, resource, subprocess, sys, time\n"
             "t = time.monotonic()\n"
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
             "print(json.dumps({'exit': r.returncode, 'seconds': round(time.monotonic() - t, 1),\n"
             "  'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),\n"
             "  'said': ' '.join(r.stderr.split())[:160]}))\n")
    done = subprocess.run([sys.executable, "-c", probe, SELFTAUGHT, *args], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, "SELFTAUGHT_HOME": str(cwd / "home")})
    return json.loads(done.stdout)


def bench_scale(work: Path) -> dict:
    def line(i: int, prompt: str | None = None) -> bytes:
        return json.dumps({"id": f"t{i}", "prompt": prompt or f"What is {i} + 1?", "answer": i + 1}).encode() + b"\n"

    (work / "10k.jsonl").write_bytes(b"".join(line(i) for i in range(10_000)))
    (work / "100k-prompts.jsonl").write_bytes(b"".join(line(i, "p" * 100_000) for i in range(20)))
    (work / "non-utf8.jsonl").write_bytes(line(0) + b'{"id": "t1", "prompt": "caf\xe9", "answer": 1}\n')
    with (work / "50mb-line.jsonl").open("wb") as handle:
        handle.write(line(0) + line(1, "x" * (50 * 1024 * 1024)) + line(2))
    cases = {
        "baseline: rg:gcd:n=1": ["tasks", "rg:gcd:n=1", "--json"],
        "10k-task JSONL": ["tasks", "10k.jsonl", "--json"],
        "20 prompts of 100k characters": ["tasks", "100k-prompts.jsonl", "--json"],
        "non-UTF-8 byte": ["tasks", "non-utf8.jsonl"],
        "a 50 MB line": ["tasks", "50mb-line.jsonl"],
        "rg:gcd:n=10000000": ["tasks", "rg:gcd:n=10000000"],
        "rg:gcd:n=100000 (at the limit)": ["tasks", "rg:gcd:n=100000", "--json"],
    }
    results = {}
    for name, args in cases.items():
        results[name] = measured(args, work)
        log("scale:", name, results[name])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="faults,kill-run,kill-improve,kill-session,kill-worker,"
                        "corruption,concurrency,scale")
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("reliability.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as tmp:
        work = Path(tmp)
        for name in args.only.split(","):
            where = work / name
            where.mkdir()
            started = time.monotonic()
            if name == "faults":
                results[name] = bench_faults(where, rng)
            elif name == "kill-run":
                results[name] = bench_kill_run(where, rng, args.points)
            elif name == "kill-improve":
                results[name] = bench_kill_improve(where, rng, args.points)
            elif name == "kill-session":
                results[name] = bench_kill_session(where, rng, args.points)
            elif name == "kill-worker":
                results[name] = bench_kill_worker(where, rng, args.points)
            elif name == "corruption":
                results[name] = bench_corruption(where, rng)
            elif name == "concurrency":
                results[name] = bench_concurrency(where)
            elif name == "scale":
                results[name] = bench_scale(where)
            results[name + ":meta"] = {"seconds": round(time.monotonic() - started),
                                       "load_before": [round(x, 1) for x in load],
                                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            args.out.write_text(json.dumps(results, indent=1))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
