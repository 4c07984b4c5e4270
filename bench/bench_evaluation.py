"""Stage 5 benchmark: few-shot QA generation, ours (elusive.evaluation.stage.generate_answers) vs the released method.

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

# bench/ is a folder of scripts, not installed: run as `python bench/<x>.py`, Python puts bench/ first on the path,
# and `bench.common` (shared by every bench) needs the project root. The package itself comes from the install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.common import ROOT, Row, add_model_args, fmt_seconds, report, resolve_model, timed

SPEED_TARGET = 3.0


def questions(people: int, shots: int, seed: int = 0, eval_data: Path | None = None, shared: bool = False):
    """``people`` × fields questions, built exactly as stage 5 builds them (``shared``: one shot set per field)."""
    from elusive.evaluation.questions import build_questions, load_people, load_prompts

    templates = load_prompts(ROOT / "data" / "prompts.csv")
    fields = list(templates)
    chosen = load_people(eval_data or ROOT / "data" / "biography.csv", "eval_data", fields)[:people]
    fewshot = load_people(ROOT / "data" / "biography_fewshot.csv", "fewshot_data", fields)
    if shared:
        return build_questions(chosen, fewshot, templates, shots, seed, shared=True)
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


def ours_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, qs=None,
                 shared: bool = False) -> list[str]:
    """Stage 5's answers; with ``shared`` shots, through ``answer_questions`` (each field's shots run once)."""
    if shared:
        from elusive.evaluation.generation import answer_questions

        return answer_questions(model, tokenizer, qs, max_new_tokens, batch_size, True)
    from elusive.evaluation.generation import generate_answers

    return generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size)


class ForwardCounter:
    """Counts forward calls of a model, the token positions (batch × length) they process, and the time spent
    in prompt forwards (prefill: more than one new position per sequence) and in one-token decode steps."""

    def __init__(self, model):
        self.calls = self.positions = 0
        self.prefill = self.decode = 0.0
        self._start = 0.0
        self._is_prefill = False
        self.handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                        model.register_forward_hook(self._post)]

    def _pre(self, _module, args, kwargs):
        import time

        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        self.calls += 1
        self.positions += int(ids.shape[0] * ids.shape[1]) if ids is not None else 0
        self._is_prefill = ids is not None and ids.shape[1] > 1
        self._start = time.perf_counter()

    def _post(self, *_):
        import time

        spent = time.perf_counter() - self._start
        if self._is_prefill:
            self.prefill += spent
        else:
            self.decode += spent

    def reset(self) -> dict[str, float]:
        out = {"calls": self.calls, "positions": self.positions, "prefill": self.prefill, "decode": self.decode}
        self.calls = self.positions = 0
        self.prefill = self.decode = 0.0
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--people", type=int, default=2, help="people asked about; questions = people × fields")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8, help="our prompts per generate call")
    parser.add_argument("--shared-shots", action="store_true",
                        help="one shot set per field for both sides (stage 5's shared_shots=true): ours computes "
                             "each field's shots once and reuses their KV cache")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (alternating order); the fastest counts")
    args = parser.parse_args(argv)
    model_dir = resolve_model(args)

    from elusive.evaluation.adapters import load_for_eval

    model, tokenizer = load_for_eval(model_dir, None, "cpu", "float32", None)
    qs = questions(args.people, args.shots, shared=args.shared_shots)
    prompts = [q.prompt for q in qs]
    counter = ForwardCounter(model)
    baseline_answers(model, tokenizer, prompts[:1], 2)  # warm-up
    ours_answers(model, tokenizer, prompts[:2], 2, 2)
    counter.reset()

    runs = {"baseline": [], "ours": []}
    for k in range(max(1, args.repeat)):  # alternate the order; the fastest run of each counts
        for name in (("baseline", "ours") if k % 2 == 0 else ("ours", "baseline")):
            if name == "baseline":
                seconds, answers = timed(lambda: baseline_answers(model, tokenizer, prompts, args.max_new_tokens))
            else:
                seconds, answers = timed(lambda: ours_answers(model, tokenizer, prompts, args.max_new_tokens, args.batch_size,
                                                             qs, args.shared_shots))
            runs[name].append((seconds, answers, counter.reset()))
    counter.remove()
    t_base, base, b = min(runs["baseline"], key=lambda r: r[0])
    t_ours, ours, o = min(runs["ours"], key=lambda r: r[0])

    same = sum(a == b for a, b in zip(ours, base))
    prompt_tokens = sum(len(ids) for ids in tokenizer(prompts)["input_ids"])
    shots = f"{args.shots}-shot" + (", shared shots" if args.shared_shots else "")
    rows = [Row(f"wall time, {len(qs)} questions, {shots}", fmt_seconds(t_base), fmt_seconds(t_ours),
                t_base / t_ours, SPEED_TARGET)]
    gold = sum(q.gold == a for q, a in zip(qs, ours))
    notes = [
        (f"equivalence: {same}/{len(qs)} predictions equal → {'PASS' if same == len(qs) else 'FAIL'} "
        f"(exact-match with gold: {gold}/{len(qs)})"),
        (f"forward calls / token positions through the model: baseline {b['calls']} / {b['positions']:,}, "
        f"ours {o['calls']} / {o['positions']:,} (prompts hold {prompt_tokens:,} tokens)"),
        "where the time goes: " + "; ".join(
            f"{name} prompt forwards {r['prefill']:.2f} s, decode steps {r['decode']:.2f} s, "
            f"outside the model {t - r['prefill'] - r['decode']:.2f} s"
            for name, r, t in (("baseline", b, t_base), ("ours", o, t_ours))),
        (f"model {model_dir}, fp32, default attention; max_new_tokens={args.max_new_tokens}, ours batch_size={args.batch_size}; "
        f"wall times per run: baseline {', '.join(f'{r[0]:.2f}' for r in runs['baseline'])} s, "
        f"ours {', '.join(f'{r[0]:.2f}' for r in runs['ours'])} s"),
    ]
    for q, a, b in zip(qs, ours, base):
        if a != b:
            notes.append(f"differs: {q.person} / {q.field}: ours {a!r}, baseline {b!r}")
    report("Stage 5 — few-shot evaluation", rows, notes, args.json)
    return 0 if same == len(qs) else 1


if __name__ == "__main__":
    sys.exit(main())
