"""Greedy generation for stage 5: batched, stopped at the first newline, optionally reusing the shots' KV cache.

:func:`generate_answers` sorts prompts by length, pads them on the left and stops each sequence at its first
newline; :func:`generate_with_prefix` computes a prefix shared by many prompts (the shots of
``shared_shots=true``) once and copies its KV cache for each batch. On the CPU in float32 predictions do not
depend on the batch size (on GPUs, approximately). :func:`load_for_eval` loads the base model with the LoRA adapter.
"""

from __future__ import annotations

import copy
import logging
import os

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, StoppingCriteria, StoppingCriteriaList

from elusive.core.distributed import SINGLE, Share
from elusive.core.errors import InputError
from elusive.core.models import model_device
from elusive.evaluation.questions import Question

log = logging.getLogger(__name__)


class StopAtNewline(StoppingCriteria):
    """Stop each sequence once its generated text contains a newline.

    Hand-written instead of ``stop_strings`` so it works for any vocabulary (word-level tokenizers included).
    """

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor(["\n" in t for t in texts], dtype=torch.bool, device=input_ids.device)


def answer_text(tokenizer, new_ids: torch.Tensor) -> str:
    """The answer in generated ids: decoded, cut at the first newline, stripped."""
    return tokenizer.decode(new_ids, skip_special_tokens=True).split("\n", 1)[0].strip()


def greedy_config(tokenizer, max_new_tokens: int) -> GenerationConfig:
    """Plain greedy decoding, set explicitly so sampling defaults shipped with a model are ignored."""
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        repetition_penalty=1.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, part: Share = SINGLE
) -> list[str | None]:
    """Greedy answers for ``prompts``, batched with left padding and an attention mask, cut at a newline.

    With several processes, ``part`` picks this process's batches (every process forms the same batches);
    prompts of other processes' batches get None.
    """
    device = model_device(model)
    config = greedy_config(tokenizer, max_new_tokens)
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])  # similar lengths share a batch
    answers: list[str | None] = [None] * len(prompts)
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for batch in tqdm(part.pick(batches), desc="evaluate", unit="batch"):
        enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True).to(device)
        width = enc["input_ids"].shape[1]
        out = model.generate(
            **enc,
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([StopAtNewline(tokenizer, width)]),
        )
        for row, i in enumerate(batch):
            answers[i] = answer_text(tokenizer, out[row, width:])
    return answers


def shared_prefix(prompts: list[str]) -> str:
    """The longest common prefix of ``prompts`` that ends with a blank line (the shots), or ""."""
    common = os.path.commonprefix(prompts)
    cut = common.rfind("\n\n")
    return common[: cut + 2] if cut >= 0 else ""


@torch.no_grad()
def generate_with_prefix(
    model: PreTrainedModel,
    tokenizer,
    prefix: str,
    suffixes: list[str],
    max_new_tokens: int,
    batch_size: int,
    part: Share = SINGLE,
) -> list[str | None] | None:
    """Greedy answers for ``prefix + suffix``, running the shared prefix through the model only once.

    The prefix's KV cache is computed once and copied for each batch of suffixes. Returns None when the tokenizer
    merges tokens across the prefix/suffix boundary: the caller then uses :func:`generate_answers`, so the
    shortcut never changes a prediction. ``part`` picks this process's batches as in :func:`generate_answers`.
    """
    prefix_ids = tokenizer(prefix)["input_ids"]
    full = tokenizer([prefix + s for s in suffixes])["input_ids"]
    p = len(prefix_ids)
    if not prefix or any(ids[:p] != prefix_ids or len(ids) == p for ids in full):
        return None
    device = model_device(model)
    config = greedy_config(tokenizer, max_new_tokens)
    prefix_cache = model(torch.tensor([prefix_ids], device=device), use_cache=True).past_key_values
    # Batches hold suffixes of equal token length: no padding at all, so sliding-window attention (Gemma)
    # sees exactly what it sees in the full prompt.
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(full):
        by_length.setdefault(len(ids), []).append(i)
    batches = [group[k : k + batch_size] for _, group in sorted(by_length.items()) for k in range(0, len(group), batch_size)]
    answers: list[str | None] = [None] * len(suffixes)
    for batch in tqdm(part.pick(batches), desc="evaluate (shared prefix)", unit="batch"):
        ids = torch.tensor([full[i] for i in batch], device=device)
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(len(batch))
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            past_key_values=cache,
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([StopAtNewline(tokenizer, ids.shape[1])]),
        )
        for row, i in enumerate(batch):
            answers[i] = answer_text(tokenizer, out[row, ids.shape[1] :])
    return answers


def answer_questions(
    model,
    tokenizer,
    questions: list[Question],
    max_new_tokens: int,
    batch_size: int,
    shared: bool,
    part: Share = SINGLE,
) -> list[str | None]:
    """Answers in question order; with ``shared`` shots, each field's common prefix is computed once.

    With several processes, each answers only its share of the batches; the others' answers are None.
    """
    if not shared:
        return generate_answers(model, tokenizer, [q.prompt for q in questions], max_new_tokens, batch_size, part)
    answers: list[str | None] = [None] * len(questions)
    for field in dict.fromkeys(q.field for q in questions):
        idx = [i for i, q in enumerate(questions) if q.field == field]
        prompts = [questions[i].prompt for i in idx]
        prefix = shared_prefix(prompts)
        suffixes = [pr[len(prefix) :] for pr in prompts]
        got = generate_with_prefix(model, tokenizer, prefix, suffixes, max_new_tokens, batch_size, part)
        if got is None:
            log.warning("field %s: the tokenizer merges across the shots/question boundary; using full prompts", field)
            got = generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size, part)
        for i, answer in zip(idx, got):
            answers[i] = answer
    return answers


def check_prompt_lengths(tokenizer, questions: list, max_new_tokens: int, limit: int | None) -> None:
    """Refuse a prompt that, with ``max_new_tokens`` answer tokens, does not fit the model's ``limit`` positions
    (prompts are never truncated: a cut prompt would lose its question). Checked before any generation.

    Raises:
        InputError: Naming the first such question, its length and the limit.
    """
    if limit is None or not questions:
        return
    lengths = tokenizer([q.prompt for q in questions], return_length=True)["length"]
    for q, n in zip(questions, lengths):
        if n + max_new_tokens > limit:
            raise InputError(
                f"max_new_tokens={max_new_tokens}: the prompt about {q.person!r} ({q.field}) has {n} tokens, so with "
                f"the answer it needs {n + max_new_tokens} positions, more than the model's {limit}; lower shots= "
                "(or max_new_tokens), or shorten the texts"
            )
