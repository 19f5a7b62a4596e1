"""The real embedded model (SmolLM2-135M-Instruct) through the one seam.

Slow on CPU: the first run converts the GGUF into the cache (about a minute); after
that the whole file takes well under two minutes. Generations stay short on purpose.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agents.litellm_model import LiteLLMChatModel, make_chat_model
from agents.model import GenerationParams
from core.errors import ConfigError

pytestmark = pytest.mark.model

MODEL = "local/smollm2"
CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
COUNT = [{"role": "user", "content": "Count from 1 to 10, one number per line."}]
GREEDY = GenerationParams(temperature=0.0, max_tokens=24)


@pytest.fixture(scope="module")
def model():
    return make_chat_model(MODEL)


@pytest.fixture(scope="module")
def engine(model):
    from agents.local.engine import get_engine

    return get_engine(MODEL)


async def test_greedy_completion_is_real_and_deterministic(model, engine):
    first = await model.complete(CAPITAL, GREEDY)
    second = await model.complete(CAPITAL, GREEDY)
    assert first.text.strip() and first.text == second.text
    assert "Paris" in first.text
    assert first.model == MODEL and first.finish_reason in ("stop", "length")

    # Usage counts are the tokenizer's, not estimates.
    from agents.local.decode import render_prompt

    tokenizer = engine.tokenizer
    prompt = render_prompt(tokenizer, CAPITAL)
    assert first.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False).input_ids)
    reply_tokens = len(tokenizer(first.text, add_special_tokens=False).input_ids)
    assert 0 < first.usage.completion_tokens <= GREEDY.max_tokens
    assert abs(first.usage.completion_tokens - reply_tokens) <= 1  # +1: the eos token
    assert first.usage.latency_s > 0 and first.usage.cost_usd == 0.0


async def test_stop_strings_cut_the_reply_and_stop_generation_early(model):
    full = await model.complete(COUNT, GREEDY)
    assert "\n" in full.text.strip()  # otherwise this test proves nothing
    cut = await model.complete(COUNT, GREEDY.model_copy(update={"stop": ("\n",)}))
    assert "\n" not in cut.text
    assert full.text.startswith(cut.text)
    assert cut.finish_reason == "stop"
    assert cut.usage.completion_tokens < full.usage.completion_tokens
    pieces = [p async for p in model.stream(COUNT, GREEDY.model_copy(update={"stop": ("\n",)}))]
    assert "".join(pieces) == cut.text


async def test_concurrent_requests_share_one_generate_call(model, engine):
    solo = await model.complete(CAPITAL, GREEDY)
    before = len(engine.batch_stats.recent)
    prompts = [CAPITAL] + [
        [{"role": "user", "content": f"Name a fruit that is {colour}."}]
        for colour in ("red", "yellow", "green", "orange", "purple")
    ]
    replies = await asyncio.gather(*(model.complete(p, GREEDY) for p in prompts))
    sizes = [size for _, size in list(engine.batch_stats.recent)[before:]]
    assert max(sizes) > 1, f"no batching happened: batch sizes {sizes}"
    assert sum(sizes) == len(prompts)
    assert replies[0].text == solo.text  # batched greedy matches the unbatched answer
    assert all(r.text.strip() for r in replies)


def test_converted_cache_exists_and_is_reused(engine, monkeypatch):
    from agents.local import cache
    from agents.local.engine import LocalEngine
    from agents.local.request import GenRequest
    from agents.local.resolve import resolve_local_model

    source = resolve_local_model(MODEL)
    directory = cache.converted_dir(source.path)
    assert cache.is_converted(directory)
    assert (directory / "model.safetensors").is_file() and (directory / "tokenizer.json").is_file()

    # A second load (as in a new process) must come from the cache, never convert.
    def no_conversion(*_):
        raise AssertionError("converted again although the cache exists")

    monkeypatch.setattr(cache, "_convert", no_conversion)
    fresh = LocalEngine.from_source(source)
    try:
        started = time.perf_counter()
        result = fresh.submit(GenRequest(messages=CAPITAL, max_tokens=8)).result(timeout=120)
        assert result.text.strip()
        assert fresh.stats.load_seconds < 10, f"cached load took {fresh.stats.load_seconds:.1f} s"
        assert time.perf_counter() - started < 60
    finally:
        fresh.close()


async def test_missing_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        make_chat_model(f"local/{tmp_path}/no-model-here")
    # Also at call time, when the seam was built directly.
    with pytest.raises(ConfigError, match="does not exist"):
        await LiteLLMChatModel(f"local/{tmp_path}/gone.gguf").complete(CAPITAL, GREEDY)


@pytest.fixture(scope="module")
def random_adapter(engine, tmp_path_factory):
    """A random LoRA for the real model (init_lora_weights=False, so not a no-op),
    built on a separate copy of the base weights: peft wraps modules in place."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from agents.local import cache
    from agents.local.resolve import resolve_local_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(
        cache.converted_dir(resolve_local_model(MODEL).path), dtype=torch.float32
    )
    lora = LoraConfig(
        r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    directory = tmp_path_factory.mktemp("smollm2-random-lora")
    get_peft_model(base, lora).save_pretrained(directory)
    return str(directory)


async def test_per_request_adapter_without_reloading_the_base(model, engine, random_adapter):
    plain = GenerationParams(max_tokens=16)
    adapted = plain.model_copy(update={"adapter": random_adapter})
    base_loads = engine.stats.base_loads
    reference = await model.complete(CAPITAL, plain)
    with_adapter, without = await asyncio.gather(
        model.complete(CAPITAL, adapted), model.complete(CAPITAL, plain)
    )
    assert with_adapter.text != reference.text
    assert with_adapter.adapter == random_adapter
    assert without.text == reference.text  # the adapter is disabled, not merged
    assert engine.stats.base_loads == base_loads == 1
    assert engine.stats.adapter_loads == 1
    with pytest.raises(ConfigError, match="adapter"):
        await model.complete(CAPITAL, plain.model_copy(update={"adapter": random_adapter + "-x"}))
