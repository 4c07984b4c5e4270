"""Stage 5 benchmark: few-shot QA generation, ours (elusive.evaluation.generate_answers) vs the released method.

The same questions (same people, fields and 5 few-shot examples per question, from ``build_questions``)
go to both, on the same loaded model.

Baseline (the released code's method, re-written here): one full 5-shot prompt per question, batch 1,
greedy ``generate`` with no newline stop, so every answer is decoded to ``max_new_tokens`` (or EOS); the
answer is then cut at the first newline.

Ours: ``generate_answers`` — prompts sorted by length and batched with left padding, each sequence
stopping at its first newline.

Both answer lists must be equal (printed). Also counts forward calls and token positions each method
runs through the model, to show where the time goes.

    python bench/bench_evaluation.py                       # real model, 2 people × 5 fields = 10 questions
    python bench/bench_evaluation.py --tiny --people 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import ROOT, Row, add_model_args, fmt_seconds, report, resolve_model, timed  # noqa: E402

SPEED_TARGET = 3.0


def questions(people: int, shots: int, seed: int = 0, eval_data: Path | None = None):
    """``people`` × fields questions, built exactly as stage 5 builds them."""
    from elusive.evaluation import build_questions, load_people, load_prompts

    templates = load_prompts(ROOT / "data" / "prompts.csv")
    fields = list(templates)
    chosen = load_people(eval_data or ROOT / "data" / "biography.csv", "eval_data", fields)[:people]
    fewshot = load_people(ROOT / "data" / "biography_fewshot.csv", "fewshot_data", fields)
    return build_questions(chosen, fewshot, templates, shots, seed)


def generation_config(tokenizer, max_new_tokens: int):
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, repetition_penalty=1.0,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)


@torch.no_grad()
def baseline_answers(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Batch 1, the full prompt each time, decoded to ``max_new_tokens`` (no stop at the newline)."""
    config = generation_config(tokenizer, max_new_tokens)
    answers = []
    for prompt in prompts:
        enc = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**enc, generation_config=config)
        text = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        answers.append(text.split("\n", 1)[0].strip())
    return answers


def ours_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    from elusive.evaluation import generate_answers

    return generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size)


class ForwardCounter:
    """Counts forward calls of a model and the token positions (batch × length) they process."""

    def __init__(self, model):
        self.calls = 0
        self.positions = 0
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        self.calls += 1
        self.positions += int(ids.shape[0] * ids.shape[1]) if ids is not None else 0

    def reset(self) -> tuple[int, int]:
        out = (self.calls, self.positions)
        self.calls = self.positions = 0
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--people", type=int, default=2, help="people asked about; questions = people × fields")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8, help="our prompts per generate call")
    args = parser.parse_args(argv)
    model_dir = resolve_model(args)

    from elusive.evaluation import load_for_eval

    model, tokenizer = load_for_eval(model_dir, None, "cpu", "float32", None)
    qs = questions(args.people, args.shots)
    prompts = [q.prompt for q in qs]
    counter = ForwardCounter(model)
    baseline_answers(model, tokenizer, prompts[:1], 2)  # warm-up
    ours_answers(model, tokenizer, prompts[:2], 2, 2)
    counter.reset()

    t_base, base = timed(lambda: baseline_answers(model, tokenizer, prompts, args.max_new_tokens))
    base_calls, base_pos = counter.reset()
    t_ours, ours = timed(lambda: ours_answers(model, tokenizer, prompts, args.max_new_tokens, args.batch_size))
    ours_calls, ours_pos = counter.reset()
    counter.handle.remove()

    same = sum(a == b for a, b in zip(ours, base))
    prompt_tokens = sum(len(ids) for ids in tokenizer(prompts)["input_ids"])
    rows = [Row(f"wall time, {len(qs)} questions, {args.shots}-shot", fmt_seconds(t_base), fmt_seconds(t_ours),
                t_base / t_ours, SPEED_TARGET)]
    gold = sum(q.gold == a for q, a in zip(qs, ours))
    notes = [
        f"equivalence: {same}/{len(qs)} predictions equal → {'PASS' if same == len(qs) else 'FAIL'} "
        f"(exact-match with gold: {gold}/{len(qs)})",
        f"forward calls / token positions through the model: baseline {base_calls} / {base_pos:,}, "
        f"ours {ours_calls} / {ours_pos:,} (prompts hold {prompt_tokens:,} tokens)",
        f"model {model_dir}, fp32, default attention; max_new_tokens={args.max_new_tokens}, ours batch_size={args.batch_size}",
    ]
    for q, a, b in zip(qs, ours, base):
        if a != b:
            notes.append(f"differs: {q.person} / {q.field}: ours {a!r}, baseline {b!r}")
    report("Stage 5 — few-shot evaluation", rows, notes, args.json)
    return 0 if same == len(qs) else 1


if __name__ == "__main__":
    sys.exit(main())
