"""What one forward of the embedded model costs on this machine: the figures behind the
concurrency analysis in RESULTS.md.

    uv run python benchmarks/bench_engine_costs.py

Prefill ms per prompt token (one 60-token prompt, 16 of them together), decode ms per
step at 1, 16 and 32 rows (cache of 64 and 256 tokens) with transformers' ``DynamicCache``
and with the engine's in-place ``spare_cache`` (alternating, so drift hits both), and
peft's per-use cost of its ``disable_adapter()`` context with one LoRA adapter loaded.
fp32, torch's default threads.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, DynamicCache  # noqa: E402

from agents.local.cache import ensure_converted  # noqa: E402
from agents.local.fastpath import use_onednn_lm_head  # noqa: E402
from agents.local.kv import spare_cache  # noqa: E402
from agents.local.resolve import resolve_local_model  # noqa: E402


def seconds(fn, reps: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - started) / reps


@torch.inference_mode()
def prefill_ms_per_token(model, rows: int, length: int) -> float:
    ids = torch.randint(100, 1000, (rows, length))
    run = lambda: model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)  # noqa: E731
    return seconds(run, 3) * 1000 / (rows * length)


@torch.inference_mode()
def decode_ms_per_step(model, rows: int, length: int, steps: int = 8, cache=None) -> float:
    cache = DynamicCache() if cache is None else cache
    mask = torch.ones(rows, length, dtype=torch.long)
    model(input_ids=torch.randint(100, 1000, (rows, length)), attention_mask=mask,
          past_key_values=cache, use_cache=True, logits_to_keep=1)
    last = torch.randint(100, 1000, (rows, 1))
    started = time.perf_counter()
    for i in range(steps):
        mask = torch.cat([mask, torch.ones(rows, 1, dtype=torch.long)], dim=1)
        model(input_ids=last, attention_mask=mask, position_ids=torch.full((rows, 1), length + i),
              past_key_values=cache, use_cache=True, logits_to_keep=1)
    return (time.perf_counter() - started) * 1000 / steps


def main() -> None:
    directory = ensure_converted(resolve_local_model("local/smollm2").path)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    use_onednn_lm_head(model)
    print(f"threads: {torch.get_num_threads()}")
    for rows in (1, 16):
        print(f"prefill {rows} x 60 tokens: {prefill_ms_per_token(model, rows, 60):.2f} ms/token")
    for rows in (1, 16, 32):
        for length in (64, 256):
            dynamic, spare = [], []
            for _ in range(3):
                dynamic.append(decode_ms_per_step(model, rows, length, steps=16))
                spare.append(decode_ms_per_step(model, rows, length, steps=16, cache=spare_cache()))
            print(f"decode {rows} rows, {length}-token cache: {min(dynamic):.0f} ms/step "
                  f"(DynamicCache), {min(spare):.0f} ms/step (spare_cache), best of 3")

    from peft import LoraConfig, get_peft_model

    with tempfile.TemporaryDirectory() as adapter:
        get_peft_model(model, LoraConfig(r=16, target_modules="all-linear")).save_pretrained(adapter)
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
        peft_model = PeftModel.from_pretrained(base, adapter)

        def disabled():
            with peft_model.disable_adapter():
                pass

        print(f"peft disable_adapter() enter+exit: {seconds(disabled, 20) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
