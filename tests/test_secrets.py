"""scrub_secrets: every credential shape goes, ordinary text stays."""

from __future__ import annotations

import pytest

from core.secrets import REDACTED, scrub_secrets

NO_ENV: dict[str, str] = {}

OPENAI = "sk-proj-" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY"
ANTHROPIC = "sk-ant-api03-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe_-AbCd"


@pytest.mark.parametrize(
    "secret",
    [
        OPENAI,
        "sk-" + "a" * 48,
        ANTHROPIC,
        "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
        "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz012345",
        "AKIA" + "IOSFODNN7EXAMPLE",
        "AIza" + "SyA1234567890abcdefghijklmnopqrstuv",
        "xoxb-" + "123456789012-abcdefghijkl",
        "gsk_" + "abcdefghijklmnopqrstuvwxyz012345",
        "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiIxMjM0NTY3ODkwIn0." + "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ],
)
def test_key_shapes_are_redacted(secret: str) -> None:
    text = f"using key {secret} for the call"
    out = scrub_secrets(text, NO_ENV)
    assert secret not in out
    assert out == f"using key {REDACTED} for the call"


def test_key_inside_quotes_and_json() -> None:
    text = f'{{"key": "{OPENAI}"}}'
    assert scrub_secrets(text, NO_ENV) == f'{{"key": "{REDACTED}"}}'


def test_bearer_token_keeps_the_word() -> None:
    token = "abc.DEF-123_456~789+xyz/qrs="
    out = scrub_secrets(f"Authorization: Bearer {token}", NO_ENV)
    assert out == f"Authorization: Bearer {REDACTED}"
    assert scrub_secrets(f"authorization: bearer {token}", NO_ENV).endswith(f"bearer {REDACTED}")


def test_short_bearer_word_in_prose_survives() -> None:
    text = "The bearer bonds were stolen."
    assert scrub_secrets(text, NO_ENV) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("OPENAI_API_KEY=abcd1234efgh5678", f"OPENAI_API_KEY={REDACTED}"),
        ('api_key: "q9w8e7r6t5y4"', f'api_key: "{REDACTED}"'),
        ('{"password": "hunter2hunter2"}', f'{{"password": "{REDACTED}"}}'),
        ("export GITHUB_TOKEN='zz9zz9zz9zz9'", f"export GITHUB_TOKEN='{REDACTED}'"),
        ("client_secret = abcdefgh12", f"client_secret = {REDACTED}"),
    ],
)
def test_secret_assignments(text: str, expected: str) -> None:
    assert scrub_secrets(text, NO_ENV) == expected


def test_env_values_of_secret_names_are_redacted() -> None:
    env = {
        "MY_SERVICE_API_KEY": "plainlookingvalue",
        "SOME_TOKEN": "tok3n-value-xyz",
        "DB_SECRET": "s3cr3t!!value",
        "HOME": "/home/someone-long-path",  # not a secret name: untouched
        "SHORT_TOKEN": "abc",  # too short to scrub safely
    }
    text = "a plainlookingvalue b tok3n-value-xyz c s3cr3t!!value d /home/someone-long-path abc"
    out = scrub_secrets(text, env)
    assert out == f"a {REDACTED} b {REDACTED} c {REDACTED} d /home/someone-long-path abc"


def test_env_lookup_is_case_insensitive_on_the_name() -> None:
    assert scrub_secrets("x verysecretvalue y", {"foo_api_key": "verysecretvalue"}) == f"x {REDACTED} y"


def test_env_value_containing_another_is_replaced_whole() -> None:
    env = {"A_TOKEN": "abcdefgh", "B_TOKEN": "abcdefghijklmnop"}
    assert scrub_secrets("abcdefghijklmnop", env) == REDACTED


def test_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFTAUGHT_TEST_API_KEY", "env-only-value-42")
    assert scrub_secrets("key is env-only-value-42.") == f"key is {REDACTED}."


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The answer is 42.",
        "Answer: sk-1",  # too short to be a key
        "max_tokens: 256, prompt_tokens=12345678",
        "next token: x",
        "def task_sk(): return 'ask-me'",
        "Use a risk-adjusted sk-ewness estimate.",
        "```python\nimport os\nprint(os.environ['OPENAI_API_KEY'])\n```",
        "tokens=1200 seconds=3.5",
    ],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert scrub_secrets(text, NO_ENV) == text


@pytest.mark.parametrize(
    "text",
    [
        f"key {OPENAI} and Bearer abcdefghijklmnopqrstuvwxyz and API_KEY=zzzzzzzzzz",
        f"{ANTHROPIC}{ANTHROPIC}",
        "password=[REDACTED]",
    ],
)
def test_idempotent(text: str) -> None:
    once = scrub_secrets(text, NO_ENV)
    assert scrub_secrets(once, NO_ENV) == once
    assert OPENAI not in once and ANTHROPIC not in once
