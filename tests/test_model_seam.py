"""Unit tests of the model seam: litellm error policy and the local batching machinery.

No real model and no network: litellm answers with ``mock_response`` or a monkeypatched
``acompletion``; the local engine runs a tiny random Llama built from a config.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from agents.litellm_model import (
    LiteLLMChatModel,
    backoff_delay,
    litellm_module,
    make_chat_model,
)
from agents.local.batcher import Batcher
from agents.model import ChatModel, GenerationParams
from errors import ConfigError, ModelError, TransientModelError

MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def litellm():
    return litellm_module()


def scripted_acompletion(litellm, monkeypatch, outcomes):
    """Replace ``litellm.acompletion``: each call takes the next outcome (an exception
    to raise, or a string answered through litellm's own mock_response)."""
    real = litellm.acompletion
    calls = []

    async def fake(**kwargs):
        calls.append(kwargs)
        outcome = outcomes[min(len(calls) - 1, len(outcomes) - 1)]
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            return await outcome(**kwargs)
        return await real(**kwargs, mock_response=outcome)

    monkeypatch.setattr(litellm, "acompletion", fake)
    return calls


def rate_limited(litellm):
    return litellm.RateLimitError(message="slow down", llm_provider="openai", model="gpt-4o-mini")


# -- LiteLLMChatModel ----------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    assert backoff_delay(0, 1.0, rand=lambda: 0.5) == 1.0
    assert backoff_delay(3, 1.0, rand=lambda: 0.5) == 8.0
    assert backoff_delay(10, 1.0, cap_s=30, rand=lambda: 0.5) == 30.0
    assert backoff_delay(2, 1.0, rand=lambda: 0.0) == 2.0  # jitter factor 0.5
    assert backoff_delay(2, 1.0, rand=lambda: 0.999) == pytest.approx(5.996)


async def test_complete_returns_text_usage_cost_and_latency():
    model = LiteLLMChatModel("openai/gpt-4o-mini", extra={"mock_response": "Hello there"})
    assert isinstance(model, ChatModel)
    completion = await model.complete(MESSAGES, GenerationParams(max_tokens=5))
    assert completion.text == "Hello there"
    assert completion.model == "openai/gpt-4o-mini"
    assert completion.finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.usage.latency_s > 0
    assert completion.usage.cost_usd > 0  # gpt-4o-mini is in litellm's local cost map


async def test_unknown_cost_is_zero():
    model = LiteLLMChatModel("openai/no-such-model-xyz", extra={"mock_response": "hi"})
    assert (await model.complete(MESSAGES)).usage.cost_usd == 0.0


async def test_transient_errors_are_retried_then_succeed(litellm, monkeypatch):
    calls = scripted_acompletion(litellm, monkeypatch, [rate_limited(litellm)] * 2 + ["ok"])
    model = LiteLLMChatModel("openai/gpt-4o-mini", max_retries=3, backoff_s=0)
    assert (await model.complete(MESSAGES)).text == "ok"
    assert len(calls) == 3
    assert calls[0]["max_retries"] == 0  # the provider SDK must not retry on its own


@pytest.mark.parametrize(
    "make_error",
    [
        rate_limited,
        lambda lm: lm.ServiceUnavailableError(message="503", llm_provider="openai", model="m"),
        lambda lm: lm.InternalServerError(message="500", llm_provider="openai", model="m"),
        lambda lm: lm.Timeout(message="timed out", model="m", llm_provider="openai"),
        lambda lm: lm.APIConnectionError(message="refused", llm_provider="openai", model="m"),
    ],
)
async def test_transient_errors_become_transient_model_error_when_retries_run_out(
    litellm, monkeypatch, make_error
):
    calls = scripted_acompletion(litellm, monkeypatch, [make_error(litellm)])
    model = LiteLLMChatModel("openai/gpt-4o-mini", max_retries=2, backoff_s=0)
    with pytest.raises(TransientModelError):
        await model.complete(MESSAGES)
    assert len(calls) == 3


async def test_backoff_sleeps_between_retries(litellm, monkeypatch):
    scripted_acompletion(litellm, monkeypatch, [rate_limited(litellm)])
    slept = []

    async def fake_sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    model = LiteLLMChatModel("openai/gpt-4o-mini", max_retries=3, backoff_s=1.0)
    with pytest.raises(TransientModelError):
        await model.complete(MESSAGES)
    assert len(slept) == 3
    assert 0.5 <= slept[0] < 1.5 and 1 <= slept[1] < 3 and 2 <= slept[2] < 6


async def test_other_provider_errors_are_model_errors_with_the_message(litellm, monkeypatch):
    error = litellm.BadRequestError(message="context too long", model="m", llm_provider="openai")
    calls = scripted_acompletion(litellm, monkeypatch, [error])
    with pytest.raises(ModelError) as raised:
        await LiteLLMChatModel("openai/gpt-4o-mini", backoff_s=0).complete(MESSAGES)
    assert not isinstance(raised.value, TransientModelError)
    assert "context too long" in str(raised.value)
    assert len(calls) == 1


async def test_rejected_key_is_a_config_error(litellm, monkeypatch):
    error = litellm.AuthenticationError(message="bad key", llm_provider="openai", model="m")
    scripted_acompletion(litellm, monkeypatch, [error])
    with pytest.raises(ConfigError, match="API key"):
        await LiteLLMChatModel("openai/gpt-4o-mini", backoff_s=0).complete(MESSAGES)


async def test_attempt_timeout_is_transient(litellm, monkeypatch):
    async def hang(**kwargs):
        await asyncio.sleep(10)

    calls = scripted_acompletion(litellm, monkeypatch, [hang])
    model = LiteLLMChatModel("openai/gpt-4o-mini", timeout_s=0.05, max_retries=1, backoff_s=0)
    with pytest.raises(TransientModelError, match="no reply"):
        await model.complete(MESSAGES)
    assert len(calls) == 2


async def test_our_own_errors_pass_through_litellm_wrapping(litellm, monkeypatch):
    # litellm wraps what a custom provider raises in APIConnectionError (which looks
    # transient); the seam must surface the original and not retry it.
    wrapped = litellm.APIConnectionError(message="wrapped", llm_provider="local", model="x")
    wrapped.__context__ = ConfigError("adapter missing")
    calls = scripted_acompletion(litellm, monkeypatch, [wrapped])
    with pytest.raises(ConfigError, match="adapter missing"):
        await LiteLLMChatModel("openai/gpt-4o-mini", backoff_s=0).complete(MESSAGES)
    assert len(calls) == 1


async def test_stream_yields_pieces_of_the_reply():
    model = LiteLLMChatModel("openai/gpt-4o-mini", extra={"mock_response": "one two three"})
    pieces = [piece async for piece in model.stream(MESSAGES)]
    assert "".join(pieces) == "one two three"


async def test_stream_retries_only_before_the_first_piece(litellm, monkeypatch):
    calls = scripted_acompletion(litellm, monkeypatch, [rate_limited(litellm), "fine"])
    model = LiteLLMChatModel("openai/gpt-4o-mini", backoff_s=0)
    assert "".join([p async for p in model.stream(MESSAGES)]) == "fine"
    assert len(calls) == 2


async def test_adapter_on_a_remote_model_is_a_config_error():
    model = LiteLLMChatModel("openai/gpt-4o-mini", extra={"mock_response": "x"})
    with pytest.raises(ConfigError, match="adapter"):
        await model.complete(MESSAGES, GenerationParams(adapter="/some/dir"))


def test_make_chat_model_rejects_bad_ids_without_network(tmp_path):
    with pytest.raises(ConfigError, match="provider/model"):
        make_chat_model("nosuchprovider/some-model")
    with pytest.raises(ConfigError):
        make_chat_model("")
    with pytest.raises(ConfigError, match="uv sync|local/PATH|Unknown local model"):
        make_chat_model("local/no-such-builtin")
    with pytest.raises(ConfigError, match="does not exist"):
        make_chat_model(f"local/{tmp_path}/missing.gguf")
    with pytest.raises(ConfigError, match="no config.json"):
        make_chat_model(f"local/{tmp_path}")
    assert make_chat_model("openai/gpt-4o-mini").timeout_s == 120
    assert make_chat_model("local/smollm2").timeout_s is None


def test_cache_root_and_hash_sidecar(tmp_path, monkeypatch):
    from agents.local import cache

    monkeypatch.setenv("SELFTAUGHT_CACHE", str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c"
    monkeypatch.delenv("SELFTAUGHT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.cache_root() == tmp_path / "x" / "selftaught"
    monkeypatch.setenv("SELFTAUGHT_CACHE", str(tmp_path / "c"))

    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"abc")
    sha = cache.file_sha256(weights)
    assert sha == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    sidecars = list((tmp_path / "c" / "hashes").glob("*.json"))
    assert len(sidecars) == 1
    # The sidecar is trusted while (path, size, mtime) match: prove it by faking it.
    saved = json.loads(sidecars[0].read_text())
    sidecars[0].write_text(json.dumps({**saved, "sha256": "f" * 64}))
    assert cache.file_sha256(weights) == "f" * 64


def test_conversion_is_atomic_and_happens_once(tmp_path, monkeypatch):
    from agents.local import cache

    monkeypatch.setenv("SELFTAUGHT_CACHE", str(tmp_path / "c"))
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"gguf bytes")
    conversions = []

    def fake_convert(gguf, out):
        conversions.append(out)
        (out / "config.json").write_text("{}")
        (out / cache.CONVERTED_MARKER).write_text("{}")

    monkeypatch.setattr(cache, "_convert", fake_convert)
    first = cache.ensure_converted(weights)
    second = cache.ensure_converted(weights)
    assert first == second == cache.converted_dir(weights)
    assert first.name == cache.file_sha256(weights)
    assert len(conversions) == 1 and not conversions[0].exists()  # temp dir renamed away
    assert [p.name for p in first.parent.iterdir()] == [first.name]

    def failing_convert(gguf, out):
        (out / "half-written").write_text("x")
        raise RuntimeError("disk full")

    other = tmp_path / "n.gguf"
    other.write_bytes(b"other")
    monkeypatch.setattr(cache, "_convert", failing_convert)
    with pytest.raises(RuntimeError):
        cache.ensure_converted(other)
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no debris


# -- Batcher (fake runner) -------------------------------------------------------------


class Req(SimpleNamespace):
    @property
    def group_key(self):
        return self.key


def blocked_batcher(run_group, **kwargs):
    """A batcher whose worker waits until ``release`` is set, so a test can queue
    everything first and the batches are deterministic."""
    release = threading.Event()
    batcher = Batcher(run_group, on_start=release.wait, gather_ms=1, **kwargs)
    return batcher, release


def test_batcher_groups_by_key_oldest_first_and_caps_batch_size():
    seen = []

    def run_group(requests):
        seen.append([r.n for r in requests])
        return [r.n * 10 for r in requests]

    batcher, release = blocked_batcher(run_group, max_batch_size=3)
    keys = ["a", "b", "a", "a", "b", "a", "c"]
    futures = [batcher.submit(Req(key=k, n=i)) for i, k in enumerate(keys)]
    release.set()
    assert [f.result(timeout=10) for f in futures] == [i * 10 for i in range(len(keys))]
    assert seen == [[0, 2, 3], [1, 4], [5], [6]]
    assert batcher.stats.largest_batch == 3 and batcher.stats.requests == 7
    assert [key for key, _ in batcher.stats.recent] == ["a", "b", "a", "c"]
    batcher.close()


def test_batcher_failures_fail_that_batch_only():
    def run_group(requests):
        if requests[0].key == "bad":
            raise ValueError("kaboom")
        return ["ok"] * len(requests)

    batcher, release = blocked_batcher(run_group)
    bad = [batcher.submit(Req(key="bad")) for _ in range(2)]
    good = batcher.submit(Req(key="good"))
    release.set()
    for future in bad:
        with pytest.raises(ModelError, match="kaboom"):
            future.result(timeout=10)
    assert good.result(timeout=10) == "ok"
    batcher.close()


def test_batcher_start_failure_fails_pending_and_later_requests():
    gate = threading.Event()

    def start():
        gate.wait()
        raise ConfigError("model missing")

    batcher = Batcher(lambda rs: rs, on_start=start)
    pending = batcher.submit(Req(key=1))
    gate.set()
    with pytest.raises(ConfigError, match="model missing"):
        pending.result(timeout=10)
    with pytest.raises(ConfigError):
        batcher.submit(Req(key=1)).result(timeout=10)
    assert batcher.failed


def test_batcher_skips_cancelled_requests():
    ran = []
    batcher, release = blocked_batcher(lambda rs: [ran.append(r.n) or r.n for r in rs])
    cancelled = batcher.submit(Req(key=0, n=1))
    kept = batcher.submit(Req(key=0, n=2))
    assert cancelled.cancel()
    release.set()
    assert kept.result(timeout=10) == 2 and ran == [2]
    batcher.close()


# -- generation with per-row stops (scripted LM) and a tiny real Llama ----------------


def tiny_tokenizer():
    """A byte-level tokenizer with no merges (one token per byte) and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    return tokenizer


class ScriptedLM:
    """Stands in for a causal LM: row i emits ``scripts[i]`` token by token through the
    real stopping-criteria protocol of ``generate``."""

    device = "cpu"
    generation_config = SimpleNamespace(eos_token_id=2)

    def __init__(self, scripts):
        self.scripts = scripts
        self.steps = 0

    def generate(
        self, input_ids, attention_mask, max_new_tokens, stopping_criteria, pad_token_id, **_
    ):
        import torch

        unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool)
        for step in range(max_new_tokens):
            column = [s[step] if step < len(s) else pad_token_id for s in self.scripts]
            column = torch.where(unfinished, torch.tensor(column), torch.tensor(pad_token_id))
            input_ids = torch.cat([input_ids, column[:, None]], dim=1)
            unfinished &= ~stopping_criteria(input_ids, None)
            self.steps = step + 1
            if not unfinished.any():
                break
        return input_ids


def test_rows_stop_on_their_own_eos_stop_string_and_max_tokens():
    from agents.local.generate import GenRequest, run_batch

    tokenizer = tiny_tokenizer()
    ids = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    eos = tokenizer.eos_token_id
    scripts = [ids("hello") + [eos], ids("one\ntwo\nthree"), ids("abcdefghijklmnop")]
    streamed = []
    requests = [
        GenRequest(messages=MESSAGES, max_tokens=20),
        GenRequest(messages=MESSAGES, max_tokens=20, stop=("\n",), on_delta=streamed.append),
        GenRequest(messages=MESSAGES, max_tokens=4),
    ]
    model = ScriptedLM(scripts)
    results = run_batch(model, tokenizer, requests)
    assert [r.text for r in results] == ["hello", "one", "abcd"]
    assert [r.finish_reason for r in results] == ["stop", "stop", "length"]
    assert [r.completion_tokens for r in results] == [6, 4, 4]
    assert model.steps == 6  # stopped when every row was done, not at max_tokens=20
    assert "".join(streamed) == "one"
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert results[0].prompt_tokens == len(ids(prompt))


def test_streamed_pieces_hold_back_a_possible_stop_string():
    from agents.local.generate import GenRequest, run_batch

    tokenizer = tiny_tokenizer()
    streamed = []
    request = GenRequest(messages=MESSAGES, max_tokens=30, stop=("END",), on_delta=streamed.append)
    model = ScriptedLM([tokenizer.encode("abc ENxEND tail", add_special_tokens=False)])
    [result] = run_batch(model, tokenizer, [request])
    assert result.text == "abc ENx" and "".join(streamed) == "abc ENx"
    assert all("END" not in piece for piece in streamed)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama (hidden 32, 2 layers) with the byte tokenizer, on disk, so it
    can be served as ``local/DIR`` through the real provider path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    directory = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_adapter_dir(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    directory = tmp_path_factory.mktemp("tiny-adapter")
    get_peft_model(base, lora).save_pretrained(directory)
    return directory


def test_batched_greedy_equals_one_at_a_time(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.local.generate import GenRequest, run_batch

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = ["hi", "a much longer prompt than the first one", "mid length"]
    requests = [
        GenRequest(messages=[{"role": "user", "content": p}], max_tokens=m)
        for p, m in zip(prompts, [12, 5, 9])
    ]
    together = run_batch(model, tokenizer, requests)
    alone = [run_batch(model, tokenizer, [r])[0] for r in requests]
    assert together == alone  # left padding and per-row stops change nothing
    assert [r.completion_tokens for r in together] == [12, 5, 9]


def test_greedy_rows_stay_greedy_in_a_batch_with_sampled_rows(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.local.generate import GenRequest, run_batch

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    greedy = [GenRequest(messages=[{"role": "user", "content": p}], max_tokens=10)
              for p in ("hi", "a longer prompt here")]
    hot = GenRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=10, temperature=5.0)
    alone = [run_batch(model, tokenizer, [r])[0] for r in greedy]
    samples = set()
    for seed in range(4):
        torch.manual_seed(seed)
        first, hot_result, second = run_batch(model, tokenizer, [greedy[0], hot, greedy[1]])
        assert [first, second] == alone  # greedy rows ignore the sampled row beside them
        samples.add(hot_result.text)
    # The hot row really samples: a random tiny model at temperature 5 varies by seed.
    assert len(samples) > 1 and alone[0].text not in samples


async def test_local_provider_batches_groups_and_applies_adapters(
    tiny_model_dir, tiny_adapter_dir, tmp_path, monkeypatch
):
    from agents.local.engine import BATCHING, get_engine

    directory = tmp_path / "model"  # a private copy, so this test gets a fresh engine
    shutil.copytree(tiny_model_dir, directory)
    # Generous gathering: a slow, shared CI machine must not split the batch.
    monkeypatch.setattr(BATCHING, "gather_ms", 300.0)
    monkeypatch.setattr(BATCHING, "max_wait_ms", 2000.0)
    model = make_chat_model(f"local/{directory}")
    engine = get_engine(str(directory))
    params = [
        GenerationParams(max_tokens=8),
        GenerationParams(max_tokens=6),
        GenerationParams(max_tokens=8, adapter=str(tiny_adapter_dir)),
        GenerationParams(max_tokens=8, temperature=0.9, seed=1),
        GenerationParams(max_tokens=8),
        GenerationParams(max_tokens=8, temperature=0.7),
    ]
    results = await asyncio.gather(*(model.complete(MESSAGES, p) for p in params))
    assert results[0].text == results[4].text  # same greedy request, same answer
    assert results[2].text != results[0].text  # the random LoRA changes the output
    assert results[2].adapter == str(tiny_adapter_dir)
    assert all(r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0 for r in results)
    sizes = {key: size for key, size in engine.batch_stats.recent}
    # The three greedy requests and the unseeded sampled one ran together; the adapter
    # and the seeded sample each had a call of their own.
    assert sizes[("shared", None)] == 4
    assert len(engine.batch_stats.recent) == 3
    assert engine.stats.base_loads == 1 and engine.stats.adapter_loads == 1

    # Without the adapter again: adapters are disabled, not merged into the base.
    again = await model.complete(MESSAGES, params[0])
    assert again.text == results[0].text
    pieces = [p async for p in model.stream(MESSAGES, params[2])]
    assert "".join(pieces) == results[2].text
    assert engine.stats.base_loads == 1 and engine.stats.adapter_loads == 1


async def test_missing_adapter_directory_is_a_config_error(tiny_model_dir, tmp_path):
    model = make_chat_model(f"local/{tiny_model_dir}")
    with pytest.raises(ConfigError, match="adapter_config.json"):
        await model.complete(MESSAGES, GenerationParams(max_tokens=2, adapter=str(tmp_path / "x")))


def test_resolve_local_paths(tmp_path):
    from agents.local.resolve import resolve_local_model

    source = resolve_local_model("local/smollm2")
    assert source.kind == "gguf" and source.path.name.endswith(".gguf") and source.path.is_file()
    (tmp_path / "config.json").write_text("{}")
    assert resolve_local_model(str(tmp_path)).kind == "hf"
    single = tmp_path / "only"
    single.mkdir()
    (single / "w.gguf").write_bytes(b"")
    assert resolve_local_model(f"local/{single}").path == (single / "w.gguf").resolve()
    (single / "v.gguf").write_bytes(b"")
    with pytest.raises(ConfigError, match="several"):
        resolve_local_model(f"local/{single}")
    with pytest.raises(ConfigError, match="not a .gguf"):
        resolve_local_model(str(tmp_path / "config.json"))
    assert Path(resolve_local_model(str(single / "v.gguf")).path).name == "v.gguf"


def test_local_provider_sync_calls_and_streaming(tiny_model_dir):
    litellm = litellm_module()
    kwargs = dict(model=f"local/{tiny_model_dir}", messages=MESSAGES, max_tokens=6, temperature=0)
    response = litellm.completion(**kwargs)
    text = response.choices[0].message.content
    assert 0 < response.usage.completion_tokens <= 6
    chunks = list(litellm.completion(**kwargs, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
