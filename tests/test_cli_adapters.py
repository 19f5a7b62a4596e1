"""``selftaught adapters list|show|promote|rollback``: the real command in a subprocess,
over a registry built with ``AdapterRegistry.add`` under ``SELFTAUGHT_HOME``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.registry import AdapterRegistry
from tests.support import cli as run_cli
from tests.support import manifest, trained_dir


def cli(*args: str, cwd: Path, **env: str):
    """The real command; a wide terminal so rich does not wrap the text asserted on."""
    return run_cli(*args, cwd=cwd, **{"COLUMNS": "200", **env})


@pytest.fixture
def reg(tmp_path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "home")  # the home `cli` gives SELFTAUGHT_HOME


@pytest.fixture
def two(reg, tmp_path) -> AdapterRegistry:
    """a0001 and a0002, both candidates; a0001 has evaluation results."""
    for name in ("a0001", "a0002"):
        reg.add(name, trained_dir(tmp_path / "trained", name), manifest())
    reg.set_eval("a0001", {"holdout": {"pass_at_1": 0.625}, "retention": {"pass_at_1": 0.8},
                           "note": "not a score"})
    return reg


def statuses(tmp_path: Path) -> dict[str, str]:
    """The statuses as the registry file on disk records them."""
    index = json.loads((tmp_path / "home" / "adapters" / "registry.json").read_text())
    return {name: m["status"] for name, m in index["adapters"].items()}


def listed(tmp_path: Path) -> dict:
    result = cli("adapters", "list", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # exactly one JSON object on stdout


def test_list_with_no_adapters_says_so_and_succeeds(tmp_path):
    plain = cli("adapters", "list", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "no adapters yet" in plain.stdout + plain.stderr
    assert listed(tmp_path) == {"adapters": [], "champion": None, "missing": {}}


def test_list_shows_both_adapters_as_json_and_as_a_table(tmp_path, two):
    payload = listed(tmp_path)
    assert payload["champion"] is None
    assert [a["name"] for a in payload["adapters"]] == ["a0001", "a0002"]
    first = payload["adapters"][0]
    assert first == two.get("a0001").model_dump(mode="json")
    assert first["status"] == "candidate" and first["base_model"] == "local/smollm2"
    assert first["evaluation"]["holdout"] == {"pass_at_1": 0.625}

    table = cli("adapters", "list", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    for text in ("a0001", "a0002", "candidate", "local/smollm2", "0.500",
                 "holdout 0.62 · retention 0.80"):
        assert text in table.stdout, table.stdout
    assert "not a score" not in table.stdout


def test_promote_promote_rollback(tmp_path, two):
    first = cli("adapters", "promote", "a0001", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "a0001 is now champion (was none)" in first.stdout
    assert listed(tmp_path)["champion"] == "a0001"

    second = cli("adapters", "promote", "a0002", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "a0002 is now champion (was a0001)" in second.stdout
    payload = listed(tmp_path)
    assert payload["champion"] == "a0002"
    assert {a["name"]: a["status"] for a in payload["adapters"]} == {
        "a0001": "retired", "a0002": "champion"}
    assert statuses(tmp_path) == {"a0001": "retired", "a0002": "champion"}

    back = cli("adapters", "rollback", cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert "a0001 is champion again" in back.stdout and "a0002 is retired" in back.stdout
    payload = listed(tmp_path)
    assert payload["champion"] == "a0001"
    assert {a["name"]: a["status"] for a in payload["adapters"]} == {
        "a0001": "champion", "a0002": "retired"}
    assert statuses(tmp_path) == {"a0001": "champion", "a0002": "retired"}
    assert AdapterRegistry(tmp_path / "home").champion().name == "a0001"


def test_promoting_the_champion_again_changes_nothing(tmp_path, two):
    two.promote("a0002")
    again = cli("adapters", "promote", "a0002", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "a0002 is already champion" in again.stdout
    assert statuses(tmp_path) == {"a0001": "candidate", "a0002": "champion"}


def test_show_by_name_and_champion(tmp_path, two):
    shown = cli("adapters", "show", "a0002", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == two.get("a0002").model_dump(mode="json")

    none_yet = cli("adapters", "show", "champion", cwd=tmp_path)
    assert none_yet.returncode == 2 and "promote" in none_yet.stderr, none_yet.stderr

    two.promote("a0001")
    champion = cli("adapters", "show", "champion", "--json", cwd=tmp_path)
    assert champion.returncode == 0, champion.stderr
    payload = json.loads(champion.stdout)
    assert payload["name"] == "a0001" and payload["status"] == "champion"
    assert payload["dataset"]["sha256"] == "0" * 64 and payload["hyper"] == {"lora_r": 16}

    pretty = cli("adapters", "show", "champion", cwd=tmp_path)
    assert pretty.returncode == 0, pretty.stderr
    for text in ("a0001", "champion", "local/smollm2", "lora_r", "pass_at_1", "0" * 64):
        assert text in pretty.stdout, pretty.stdout


@pytest.mark.parametrize("args", [("show", "nope"), ("promote", "nope"),
                                  ("show", "nope", "--json")])
def test_unknown_name_exits_2_and_names_the_adapters(tmp_path, two, args):
    result = cli("adapters", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "nope" in result.stderr and "a0001, a0002" in result.stderr, result.stderr
    if "--json" in args:  # the error, as one JSON object on stdout
        payload = json.loads(result.stdout)
        assert payload["kind"] == "ConfigError" and "nope" in payload["error"]
    else:
        assert result.stdout == ""
    assert statuses(tmp_path) == {"a0001": "candidate", "a0002": "candidate"}


def test_rollback_with_nothing_to_roll_back_exits_2(tmp_path, two):
    no_champion = cli("adapters", "rollback", cwd=tmp_path)
    assert no_champion.returncode == 2 and "no adapter is champion" in no_champion.stderr

    two.promote("a0001")
    nothing_before = cli("adapters", "rollback", cwd=tmp_path)
    assert nothing_before.returncode == 2, nothing_before.stderr
    assert "nothing to roll back to" in nothing_before.stderr
    assert "adapters promote" in nothing_before.stderr
    assert statuses(tmp_path) == {"a0001": "champion", "a0002": "candidate"}
