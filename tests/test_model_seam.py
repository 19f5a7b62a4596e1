"""Unit tests of the model seam: litellm error policy and the local batching machinery.

No real model and no network: litellm answers with ``mock_response`` or a monkeypatched
``acompletion``; the local engine runs a tiny random Llama built from a config.
"""

from __future__ import annotations

import asyncio
import json
import os
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
from agents.local.batcher import Batcher, WholeBatches
from agents.model import ChatModel, GenerationParams
from core.errors import ConfigError, ModelError, TransientModelError

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

    def start():
        release.wait()
        return WholeBatches(run_group)

    batcher = Batcher(start, gather_ms=1, **kwargs)
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

    batcher = Batcher(start)
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


class ScriptedStepper:
    """A ``Stepper`` whose rows each take ``request.steps`` steps (50 ms each) and
    return ``request.n``; records what it was asked to do."""

    def __init__(self, fail_steps=False):
        self.rows: dict = {}
        self.admitted: list[list[int]] = []
        self.fail_steps = fail_steps

    def __len__(self):
        return len(self.rows)

    def admit(self, requests, handles):
        self.admitted.append([r.n for r in requests])
        self.rows.update({h: [r.n, r.steps] for r, h in zip(requests, handles)})
        return []

    def step(self):
        import time

        time.sleep(0.05)
        if self.fail_steps:
            raise ValueError("step exploded")
        for row in self.rows.values():
            row[1] -= 1
        done = [(h, row[0]) for h, row in self.rows.items() if row[1] <= 0]
        for h, _ in done:
            del self.rows[h]
        return done

    def clear(self):
        handles, self.rows = list(self.rows), {}
        return handles


def scripted_batcher(stepper, **kwargs):
    release = threading.Event()

    def start():
        release.wait()
        return stepper

    return Batcher(start, gather_ms=1, **kwargs), release


def wait_for(condition, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_batcher_admits_requests_into_the_running_batch():
    stepper = ScriptedStepper()
    batcher, release = scripted_batcher(stepper, max_batch_size=2)
    long = batcher.submit(Req(key="a", n=1, steps=20))
    release.set()
    wait_for(lambda: stepper.admitted)
    short = batcher.submit(Req(key="a", n=2, steps=1))
    full = [batcher.submit(Req(key="a", n=3 + i, steps=1)) for i in range(2)]
    assert short.result(timeout=10) == 2
    assert not long.done()  # the short row joined and left while the long one ran
    assert [f.result(timeout=10) for f in full] == [3, 4] and long.result(timeout=10) == 1
    assert stepper.admitted[:2] == [[1], [2]]  # one free row: the others waited for it
    assert batcher.stats.largest_batch == 2
    batcher.close()


def test_batcher_switches_key_only_when_the_running_rows_are_done():
    stepper = ScriptedStepper()
    batcher, release = scripted_batcher(stepper)
    first = batcher.submit(Req(key="a", n=1, steps=6))
    other = batcher.submit(Req(key="b", n=2, steps=1))
    release.set()
    wait_for(lambda: stepper.admitted)
    later = batcher.submit(Req(key="a", n=3, steps=1))  # behind "b" in the queue
    assert [f.result(timeout=10) for f in (first, other, later)] == [1, 2, 3]
    assert stepper.admitted == [[1], [2], [3]]
    assert [key for key, _ in batcher.stats.recent] == ["a", "b", "a"]
    batcher.close()


def test_batcher_step_failure_fails_running_rows_and_serving_goes_on():
    stepper = ScriptedStepper(fail_steps=True)
    batcher, release = scripted_batcher(stepper)
    running = [batcher.submit(Req(key="a", n=i, steps=3)) for i in range(2)]
    release.set()
    for future in running:
        with pytest.raises(ModelError, match="step exploded"):
            future.result(timeout=10)
    stepper.fail_steps = False
    assert batcher.submit(Req(key="a", n=7, steps=1)).result(timeout=10) == 7
    batcher.close()


# -- generation with per-row stops (rows alone) and a tiny real Llama ----------------


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


def make_row(tokenizer, request, prompt_tokens=3):
    from agents.local.rows import Row

    return Row(tokenizer, request, {tokenizer.eos_token_id}, prompt_tokens)


def feed(row, tokens) -> int:
    """Push ``tokens`` until the row stops; how many it took."""
    for count, token in enumerate(tokens, start=1):
        if row.push(token):
            return count
    return len(tokens)


def test_rows_stop_on_their_own_eos_stop_string_and_max_tokens():
    from agents.local.request import GenRequest

    tokenizer = tiny_tokenizer()
    ids = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    streamed = []
    eos_row = make_row(tokenizer, GenRequest(messages=MESSAGES, max_tokens=20), prompt_tokens=7)
    stop_row = make_row(tokenizer, GenRequest(
        messages=MESSAGES, max_tokens=20, stop=("\n",), on_delta=streamed.append))
    long_row = make_row(tokenizer, GenRequest(messages=MESSAGES, max_tokens=4))
    assert feed(eos_row, ids("hello") + [tokenizer.eos_token_id] + ids("junk")) == 6
    assert feed(stop_row, ids("one\ntwo\nthree")) == 4
    assert feed(long_row, ids("abcdefghijklmnop")) == 4
    results = [row.result() for row in (eos_row, stop_row, long_row)]
    assert [r.text for r in results] == ["hello", "one", "abcd"]
    assert [r.finish_reason for r in results] == ["stop", "stop", "length"]
    assert [r.completion_tokens for r in results] == [6, 4, 4]
    assert results[0].prompt_tokens == 7
    assert "".join(streamed) == "one"


def test_streamed_pieces_hold_back_a_possible_stop_string():
    from agents.local.request import GenRequest

    tokenizer = tiny_tokenizer()
    streamed = []
    request = GenRequest(messages=MESSAGES, max_tokens=30, stop=("END",), on_delta=streamed.append)
    row = make_row(tokenizer, request)
    feed(row, tokenizer.encode("abc ENxEND tail", add_special_tokens=False))
    assert row.result().text == "abc ENx" and "".join(streamed) == "abc ENx"
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

    from agents.local.decode import run_batch
    from agents.local.request import GenRequest

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


def test_spare_layer_appends_in_place_and_holds_what_concatenation_would():
    import torch
    from transformers.cache_utils import DynamicLayer

    from agents.local.kv import SpareLayer

    spare, plain = SpareLayer(), DynamicLayer()
    storages = set()
    for width in [5, 1, 1, 70, 1, 200, 1]:  # crosses the buffer's capacity twice
        keys, values = torch.randn(2, 3, width, 4), torch.randn(2, 3, width, 4)
        got, want = spare.update(keys, values), plain.update(keys, values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        storages.add(spare.keys.untyped_storage().data_ptr())
    assert spare.get_seq_length() == 279
    assert len(storages) == 3  # one buffer, grown twice: single steps wrote in place
    spare.crop(-4)
    spare.update(torch.ones(2, 3, 1, 4), torch.ones(2, 3, 1, 4))
    assert spare.get_seq_length() == 276 and torch.equal(spare.keys[:, :, -1], torch.ones(2, 3, 4))
    before = spare.keys.clone()
    spare.keep_rows(torch.tensor([1]), 10)  # one row, without its first 10 columns
    assert torch.equal(spare.keys, before[1:, :, 10:])
    storage = spare.keys.untyped_storage().data_ptr()
    spare.update(torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))
    assert spare.get_seq_length() == 267 and spare.keys.untyped_storage().data_ptr() == storage


def test_spare_cache_decodes_exactly_as_the_dynamic_cache(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from agents.local.kv import spare_cache

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompt = torch.randint(3, 200, (3, 7), generator=torch.Generator().manual_seed(1))

    @torch.inference_mode()
    def greedy(cache) -> torch.Tensor:
        logits, ids = [], prompt
        for _ in range(6):
            out = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]
            logits.append(out)
            ids = out.argmax(-1, keepdim=True)
        return torch.stack(logits)

    assert torch.equal(greedy(spare_cache()), greedy(DynamicCache()))
    layers = [(torch.zeros(3, 2, 4, 8), torch.zeros(3, 2, 4, 8))] * 2  # a prefilled cache
    assert spare_cache(layers).get_seq_length() == 4


def test_rows_join_and_leave_a_running_decode_batch(tiny_model_dir):
    from contextlib import nullcontext

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.local.decode import DecodeBatch, eos_token_ids, run_batch
    from agents.local.request import GenRequest

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    forwards = []

    def select(adapter):
        forwards.append(adapter)
        return nullcontext(model)

    ask = lambda text, n: GenRequest(messages=[{"role": "user", "content": text}], max_tokens=n)  # noqa: E731
    long, short, late = ask("a much longer prompt than the others", 12), ask("hi", 3), ask("mid", 6)
    alone = {name: run_batch(model, tokenizer, [r])[0]
             for name, r in (("long", long), ("short", short), ("late", late))}

    batch = DecodeBatch(tokenizer, eos_token_ids(model, tokenizer), select)
    finished = dict(batch.admit([long, short], ["long", "short"]))
    sizes = [len(batch)]
    for _ in range(4):
        finished.update(batch.step())
        sizes.append(len(batch))
    finished.update(batch.admit([late], ["late"]))  # joins after "short" has left
    sizes.append(len(batch))
    while batch:
        finished.update(batch.step())
        sizes.append(len(batch))
    assert finished == alone  # joining and leaving change no row's greedy reply
    assert sizes[:4] == [2, 2, 1, 1] and sizes[5] == 2 and sizes[-1] == 0
    # 2 prefills + 11 steps for the longest row (its first token came from the prefill).
    assert len(forwards) == 13 and set(forwards) == {None}
    with pytest.raises(ValueError, match="one adapter per decode batch"):
        batch.admit([ask("x", 2), GenRequest(messages=MESSAGES, adapter="/a")], [1, 2])


def test_prompts_that_start_alike_reuse_stored_keys_and_values(tiny_model_dir):
    from contextlib import nullcontext

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.local.decode import DecodeBatch, eos_token_ids, render_prompt, run_batch
    from agents.local.request import GenRequest

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    system = {"role": "system", "content": "You solve problems in short steps, then answer."}
    ask = lambda *turns: GenRequest(messages=[system, *turns], max_tokens=8)  # noqa: E731
    first = ask({"role": "user", "content": "What is 2 + 2?"})
    batch = DecodeBatch(tokenizer, eos_token_ids(model, tokenizer), lambda _: nullcontext(model),
                        prefix_tokens=10_000)

    def run_alone_and_batched(request):
        finished = dict(batch.admit([request], ["x"]))
        while batch:
            finished.update(batch.step())
        assert finished["x"] == run_batch(model, tokenizer, [request])[0]
        return finished["x"]

    reply = run_alone_and_batched(first)
    assert batch.reused_tokens == 0 and len(batch.prefixes) == 1
    # Another question: the system turn is reused.
    run_alone_and_batched(ask({"role": "user", "content": "What is 3 + 5?"}))
    shared_system = batch.reused_tokens
    assert shared_system > len(tokenizer.encode(system["content"]))
    # A retry: the first conversation and its reply are reused.
    retry = ask({"role": "user", "content": "What is 2 + 2?"},
                {"role": "assistant", "content": reply.text},
                {"role": "user", "content": "Wrong. Try again."})
    run_alone_and_batched(retry)
    ids = lambda r: tokenizer(render_prompt(tokenizer, r.messages), add_special_tokens=False)["input_ids"]  # noqa: E731
    stored = ids(first) + tokenizer.encode(reply.text, add_special_tokens=False)[:-1]
    shared = len(os.path.commonprefix([stored, ids(retry)]))  # up to where the template differs
    assert shared > reply.prompt_tokens * 3 // 4
    assert batch.reused_tokens - shared_system == shared
    second = ask({"role": "user", "content": "What is 3 + 5?"})
    assert batch.prefill_tokens + batch.reused_tokens == sum(len(ids(r)) for r in (first, second, retry))


def test_prefix_cache_keeps_adapters_apart_and_evicts_the_oldest():
    import torch

    from agents.local.prefix import PrefixCache

    layers = lambda n: [(torch.full((1, 2, n, 4), float(n)), torch.zeros(1, 2, n, 4))]  # noqa: E731
    cache = PrefixCache(max_tokens=10)
    cache.add(None, [1, 2, 3], layers(3))
    cache.add(None, [1, 2, 3, 4, 5], layers(5))  # covers [1, 2, 3], which goes
    assert len(cache) == 1
    n, found = cache.longest(None, [1, 2, 3, 9], limit=3)
    assert n == 3 and found[0][0].shape == (1, 2, 3, 4) and float(found[0][0][0, 0, 0, 0]) == 5
    assert cache.longest(None, [1, 2, 3, 4, 5, 6], limit=2)[0] == 2  # the caller's limit
    assert cache.longest("/adapter", [1, 2, 3], limit=3) == (0, None)
    cache.add("/adapter", [7, 8, 9], layers(3))
    cache.add(None, [6, 6], layers(2))  # 5 + 3 + 2 = 10 tokens: all fit
    assert cache.longest(None, [1, 2], limit=2)[0] == 2  # [1..5] is now the most recent
    cache.add(None, [5], layers(1))  # 11: the least recently used goes
    assert cache.longest("/adapter", [7, 8, 9], limit=3)[0] == 0
    assert cache.longest(None, [1, 2], limit=2)[0] == 2 and len(cache) == 3


def test_seeded_rows_sample_the_same_reply_whatever_their_batch(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.local.decode import run_batch
    from agents.local.request import GenRequest

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    hot = lambda seed: GenRequest(messages=MESSAGES, max_tokens=10, temperature=5.0, seed=seed)  # noqa: E731
    others = [GenRequest(messages=[{"role": "user", "content": "another prompt"}], max_tokens=10,
                         temperature=3.0), GenRequest(messages=MESSAGES, max_tokens=4)]
    [alone] = run_batch(model, tokenizer, [hot(1)])
    torch.manual_seed(123)
    batched = run_batch(model, tokenizer, [others[0], hot(1), others[1]])
    assert batched[1] == alone
    assert len({run_batch(model, tokenizer, [hot(seed)])[0].text for seed in range(2, 6)}) > 1


def test_greedy_rows_stay_greedy_in_a_batch_with_sampled_rows(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.local.decode import run_batch
    from agents.local.request import GenRequest

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
    # Greedy and sampled (seeded or not) rows decode together; the adapter's request
    # waits for its own batch.
    assert sizes == {None: 5, str(tiny_adapter_dir): 1}
    assert len(engine.batch_stats.recent) == 2
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
