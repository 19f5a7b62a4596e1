"""Drift: how far an adapter moves the model's next-token distributions from the base.

``mean_kl`` is the mean, over tokens, of KL(candidate || base) between the two models'
next-token distributions, teacher-forced on given (prompt, reply) pairs: for each reply
token, the sum over the vocabulary of ``p_cand * (log p_cand - log p_base)`` at the
position that predicts it. ``improve`` feeds it the base model's own greedy replies to
the retention prompts, so the figure reads "how much less the candidate agrees with
what the base model would have said": an alarm for forgetting even where pass@1 on the
retention suite is near zero (the base answered wrong but the candidate still changed).

One model is loaded (the base, with the adapter on top); the base's distributions come
from the same weights with the adapter switched off. Imported only when measuring
(torch, transformers, peft).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from core.adapters import adapter_dir as checked_adapter_dir
from core.records import Message


class Drift(BaseModel):
    kl: float
    """Mean KL(candidate || base) per reply token, in nats."""
    tokens: int
    """Reply tokens the mean is over."""
    sequences: int
    seconds: float


def mean_kl(
    base: str | Path,
    adapter: str | Path,
    examples: Sequence[tuple[list[Message], str]],
    *,
    batch_size: int = 8,
    max_reply_tokens: int = 256,
) -> Drift:
    """Mean per-token KL(base + ``adapter`` || ``base``) over the reply tokens of
    ``examples`` (chat prompt, reply text); replies are cut at ``max_reply_tokens``.
    ``base`` is a ``local/...`` id or a model directory; ``ConfigError`` for a bad base or
    adapter directory. Empty replies contribute nothing; no tokens at all gives 0.0."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.train import _base_dir

    started = time.monotonic()
    base_dir = _base_dir(base)
    adapter_path = checked_adapter_dir(adapter, fix="name an adapter that training saved")
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32,
                                                 local_files_only=True)
    model = PeftModel.from_pretrained(model, str(adapter_path)).eval()
    sequences = [_ids(tokenizer, prompt, reply, max_reply_tokens) for prompt, reply in examples]
    total_kl, total_tokens = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = [s for s in sequences[start:start + batch_size] if s[1] > 0]
            if not batch:
                continue
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            predicts = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, (ids, reply_len) in enumerate(batch):
                input_ids[row, :len(ids)] = torch.tensor(ids)
                attention[row, :len(ids)] = 1
                # Position i predicts token i + 1: the reply's tokens are predicted from
                # the last prompt token up to the second-to-last token.
                predicts[row, len(ids) - reply_len - 1:len(ids) - 1] = True
            tuned = model(input_ids=input_ids, attention_mask=attention).logits[predicts]
            with model.disable_adapter():
                reference = model(input_ids=input_ids, attention_mask=attention).logits[predicts]
            log_p = torch.log_softmax(tuned.float(), dim=-1)
            log_q = torch.log_softmax(reference.float(), dim=-1)
            total_kl += float((log_p.exp() * (log_p - log_q)).sum())
            total_tokens += int(predicts.sum())
    return Drift(kl=total_kl / total_tokens if total_tokens else 0.0, tokens=total_tokens,
                 sequences=len(examples), seconds=round(time.monotonic() - started, 2))


def _ids(tokenizer, prompt: list[Message], reply: str, cap: int) -> tuple[list[int], int]:
    """(prompt + reply token ids, reply length): the prompt as the chat template renders
    it for generation, then the reply's own tokens (no end-of-turn marker is added)."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
        prompt_ids = prompt_ids["input_ids"]
    reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"][:cap]
    return list(prompt_ids) + list(reply_ids), len(reply_ids)
