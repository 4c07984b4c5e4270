"""Stage 5: closed-book k-shot QA per field, greedy decoding, SQuAD exact match and F1.

For every field in the prompts file and every person in ``eval_data``, the prompt is ``shots`` solved
examples about *other* (real, well-known) people from ``fewshot_data`` followed by the question::

    Which company did Tim Cook work for?
    Answer: Apple

    ...

    Which company did Liam Thompson work for?
    Answer:

The model continues greedily; the answer is what it writes up to the first newline.

Wikipedia mode (``eval_data`` is a ``.json``/``.jsonl`` file, see :mod:`elusive.wiki`): each question of the
file is asked closed-book (the paragraph is not in the prompt) after ``shots`` solved questions::

    Question: How tall is the tower?
    Answer: 330 metres

    ...

    Question: How many digits does it have?
    Answer:

The shots come from held-out questions: those of ``fewshot_data`` when it is also a ``.json``/``.jsonl``
file, otherwise the other questions of ``eval_data`` about a *different* paragraph. A shot never comes from
the asked question's own paragraph (by paragraph text), so no shot can give its answer away. A shot shows its
first gold answer; the prediction scores its best match over all gold answers. ``results.json`` then has one
entry ``qa``; ``prompts`` is not used.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, StoppingCriteria, StoppingCriteriaList

from elusive import distributed
from elusive.artifacts import sha256_file, write_text_atomic
from elusive.data import check_tags, read_csv
from elusive.distributed import SINGLE, Share
from elusive.errors import InputError
from elusive.metrics import exact_match, f1_score
from elusive.models import describe, load_model, load_tokenizer, model_device
from elusive.tags import parse_tagged
from elusive.wiki import WikiQuestion, is_wiki, load_wiki

log = logging.getLogger(__name__)


@dataclass
class Question:
    """One closed-book question and, after evaluation, its answer and scores."""

    person: str
    field: str
    prompt: str
    gold: str | list[str]  # Wikipedia mode: every gold answer
    prediction: str = ""
    exact_match: float = 0.0
    f1: float = 0.0


def load_prompts(path: Path) -> dict[str, str]:
    """Read ``field,prompt`` rows; a literal ``\\n`` in a prompt becomes a newline.

    Raises:
        InputError: Missing columns, duplicate fields, or a prompt without ``{name}``.
    """
    frame = read_csv(path, "prompts", columns=("field", "prompt"))
    prompts: dict[str, str] = {}
    for field, prompt in zip(frame["field"], frame["prompt"]):
        prompt = prompt.replace("\\n", "\n")
        if "{name}" not in prompt:
            raise InputError(f"prompts={path}: the prompt for field {field!r} has no {{name}}; write e.g. 'Where was {{name}} born?\\nAnswer:'")
        if field in prompts:
            raise InputError(f"prompts={path}: field {field!r} appears twice; keep one prompt per field")
        prompts[field] = prompt
    return prompts


def load_people(path: Path, key: str, fields: list[str]) -> list[dict[str, str]]:
    """Read a tagged CSV into ``{"name": ..., field: value, ...}`` per row.

    Raises:
        InputError: A malformed tag, or a row without a ``<name>`` tag or without one of ``fields``.
    """
    people = []
    texts = read_csv(path, key)["text"].tolist()
    check_tags(texts, path, key)
    for row, text in enumerate(texts):
        _, spans = parse_tagged(text)
        values: dict[str, str] = {}
        for span in spans:
            values.setdefault(span.field, span.value.strip())
        for needed in ["name", *fields]:
            if needed not in values:
                raise InputError(
                    f"{key}={path}: row {row} has no <{needed}>...</{needed}> tag; tag every field the prompts ask about "
                    "(or drop that field from the prompts file)"
                )
        people.append(values)
    return people


def render(template: str, name: str) -> str:
    """Fill ``{name}`` (by plain replacement, so other braces in a prompt are harmless)."""
    return template.replace("{name}", name)


def build_questions(
    people: list[dict[str, str]],
    fewshot: list[dict[str, str]],
    prompts: dict[str, str],
    shots: int,
    seed: int,
    shared: bool = False,
) -> list[Question]:
    """Make one k-shot question per field and person; shots never include the person asked about.

    With ``shared``, every question of a field gets the same shots (drawn once per field from the few-shot
    people not asked about), so the prompts share a prefix whose KV cache generation can reuse.
    """
    rng = np.random.default_rng(seed)
    asked = {person["name"] for person in people}
    questions = []
    for field, template in prompts.items():
        shared_pool = [p for p in fewshot if p["name"] not in asked]
        shared_choice = rng.choice(len(shared_pool), size=shots, replace=False) if shared and len(shared_pool) >= shots else None
        for person in people:
            pool = shared_pool if shared else [p for p in fewshot if p["name"] != person["name"]]
            if len(pool) < shots:
                raise InputError(
                    f"fewshot_data: only {len(pool)} usable examples for shots={shots} (people not asked about); "
                    "lower shots= or add people to fewshot_data"
                )
            chosen = shared_choice if shared else rng.choice(len(pool), size=shots, replace=False)
            parts = [f"{render(template, pool[j]['name'])} {pool[j][field]}" for j in chosen]
            parts.append(render(template, person["name"]))
            questions.append(Question(person["name"], field, "\n\n".join(parts), person[field]))
    return questions


WIKI_FIELD = "qa"


def _one_line(text: str) -> str:
    """Collapse whitespace, so a question or answer cannot break the one-line prompt format."""
    return " ".join(text.split())


def wiki_prompt(question: str, shots: list[tuple[str, str]] = ()) -> str:
    """``Question: q`` newline ``Answer: a`` per shot, blank lines between, then the asked ``Question: q`` and ``Answer:``."""
    parts = [f"Question: {_one_line(q)}\nAnswer: {_one_line(a)}" for q, a in shots]
    parts.append(f"Question: {_one_line(question)}\nAnswer:")
    return "\n\n".join(parts)


def build_wiki_questions(
    asked: list[WikiQuestion],
    asked_contexts: list[str],
    pool: list[WikiQuestion],
    pool_contexts: list[str],
    shots: int,
    seed: int,
    key: str = "eval_data",
) -> list[Question]:
    """One k-shot prompt per asked question; shots are drawn (seeded) from ``pool`` minus its own paragraph.

    Args:
        asked: The questions to ask; ``asked_contexts`` are the paragraphs their ``context`` indices refer to.
        pool: Solved questions to draw shots from; ``pool_contexts`` are their paragraphs.
        shots: Examples per prompt.
        seed: Seed of the draw.
        key: Config key that gave the pool (for the error when it is too small).

    Raises:
        InputError: Fewer than ``shots`` pool questions about other paragraphs.
    """
    rng = np.random.default_rng(seed)
    ids: dict[str, int] = {}
    pool_para = np.asarray([ids.setdefault(pool_contexts[q.context], len(ids)) for q in pool], dtype=np.int64)
    out = []
    for q in asked:
        own = ids.get(asked_contexts[q.context], -1)
        chosen: list[tuple[str, str]] = []
        if shots > 0:
            allowed = np.flatnonzero(pool_para != own)  # never the asked question's own paragraph
            if len(allowed) < shots:
                raise InputError(
                    f"{key}: only {len(allowed)} questions about other paragraphs for {shots} shots (question {q.id}); "
                    "lower shots= or give more paragraphs"
                )
            picked = allowed[rng.choice(len(allowed), size=shots, replace=False)]
            chosen = [(pool[j].question, pool[j].answers[0]) for j in picked]
        out.append(Question(q.id, WIKI_FIELD, wiki_prompt(q.question, chosen), list(q.answers)))
    return out


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


def training_meta(model_dir: Path | None) -> dict | None:
    """train.py's ``train_meta.json`` for an adapter folder (or a checkpoint-N inside one), if any."""
    if model_dir is None:
        return None
    for folder in (Path(model_dir), Path(model_dir).parent):
        if (folder / "train_meta.json").is_file():
            return json.loads((folder / "train_meta.json").read_text())
    return None


def load_for_eval(model: str, model_dir: Path | None, device: str, dtype: str, quant: str | None):
    """Load the base model, apply the LoRA adapter from ``model_dir`` (if any), and the tokenizer."""
    if model_dir is not None and not (Path(model_dir) / "adapter_config.json").is_file():
        raise InputError(
            f"model_dir={model_dir}: no adapter_config.json; give a train.py output or a checkpoint-N folder, or model_dir=null"
        )
    tokenizer = load_tokenizer(model, padding_side="left")
    lm = load_model(model, device=device, dtype=dtype, quant=quant)
    if model_dir is not None:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, str(model_dir))
        if quant is None:
            lm = lm.merge_and_unload()  # same function, faster generation
        # quantised: merging would round the update into 8-/4-bit weights, so the LoRA path stays separate
        lm.eval()
    return lm, tokenizer


def summarize(questions: list[Question]) -> dict[str, dict[str, float]]:
    """Mean exact match and F1 per field, as fractions in [0, 1]."""
    results: dict[str, dict[str, float]] = {}
    for field in dict.fromkeys(q.field for q in questions):
        rows = [q for q in questions if q.field == field]
        results[field] = {
            "exact_match": float(np.mean([q.exact_match for q in rows])),
            "f1": float(np.mean([q.f1 for q in rows])),
            "n": len(rows),
        }
    return results


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """Results as a markdown table in percent, with the mean over fields last."""
    lines = ["| field | exact match | F1 | n |", "|---|---:|---:|---:|"]
    for field, r in results.items():
        lines.append(f"| {field} | {100 * r['exact_match']:.1f} | {100 * r['f1']:.1f} | {r['n']} |")
    if len(results) > 1:
        em = np.mean([r["exact_match"] for r in results.values()])
        f1 = np.mean([r["f1"] for r in results.values()])
        lines.append(f"| mean | {100 * em:.1f} | {100 * f1:.1f} | |")
    return "\n".join(lines)


def evaluate(
    model: str,
    eval_data: Path,
    output_dir: Path,
    model_dir: Path | None = None,
    fewshot_data: Path = Path("data/biography_fewshot.csv"),
    prompts: Path = Path("data/prompts.csv"),
    shots: int = 5,
    max_new_tokens: int = 10,
    batch_size: int = 8,
    seed: int = 0,
    max_people: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    quant: str | None = None,
    shared_shots: bool = False,
) -> dict[str, dict[str, float]] | None:
    """Run stage 5: write ``results.json`` and ``predictions.jsonl`` to ``output_dir``.

    Args:
        model: Base model (hub id, directory or .gguf).
        eval_data: Tagged CSV of the people to ask about, or a Wikipedia ``.json``/``.jsonl`` file whose
            questions are asked (see the module docstring).
        output_dir: Where results go.
        model_dir: LoRA adapter from train.py (or one of its checkpoints); None evaluates the base model.
        fewshot_data: Tagged CSV of the few-shot examples; with Wikipedia ``eval_data``, a ``.json``/``.jsonl``
            file gives the shots, anything else means held-out questions of ``eval_data`` (other paragraphs).
        prompts: CSV with ``field,prompt`` (not used with Wikipedia ``eval_data``).
        shots: Examples per prompt.
        max_new_tokens: Generation budget per answer.
        batch_size: Prompts per generate call.
        seed: Seed for sampling the few-shot examples.
        max_people: Only the first N people of ``eval_data`` (None = all); with Wikipedia ``eval_data``, only its
            first N questions (shots are still drawn from the whole held-out pool).
        device: ``auto``, ``cpu``, ``cuda`` or ``multi``; launched on several processes (accelerate launch,
            torchrun), ``auto`` is this process's GPU and each process answers its share of the batches.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        quant: None, ``8bit`` or ``4bit`` (bitsandbytes, on CUDA or CPU); the adapter is then not merged.
        shared_shots: The same shots for every question of a field (biographies only), so the shots' KV
            cache is computed once per field: much faster, same predictions as full prompts with those shots.

    Returns:
        ``{field: {"exact_match": x, "f1": y, "n": n}}`` (Wikipedia mode: the one field ``qa``); None on the
        processes other than the main one of a multi-process run (they write nothing).
    """
    if shots < 0:
        raise InputError(f"shots={shots}: must be >= 0")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens={max_new_tokens}: must be >= 1")
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: must be >= 1")
    if max_people is not None and max_people < 1:
        raise InputError(f"max_people={max_people}: must be >= 1, or null for everyone in eval_data")
    if is_wiki(eval_data):
        if shared_shots:
            raise InputError("shared_shots=true: Wikipedia shots exclude the asked paragraph, so they differ per question; use shared_shots=false")
        questions = wiki_questions(eval_data, fewshot_data, shots, seed, max_people)
    else:
        if is_wiki(fewshot_data) and shots > 0:
            raise InputError(
                f"fewshot_data={fewshot_data}: Wikipedia questions can only be shots for Wikipedia eval_data "
                f"(eval_data={eval_data} is a CSV); give a tagged CSV of people"
            )
        templates = load_prompts(prompts)
        people = load_people(eval_data, "eval_data", list(templates))
        if max_people is not None:
            people = people[:max_people]
        fewshot = load_people(fewshot_data, "fewshot_data", list(templates)) if shots > 0 else []
        questions = build_questions(people, fewshot, templates, shots, seed, shared=shared_shots)
    part = distributed.share()
    lm, tokenizer = load_for_eval(model, model_dir, distributed.process_device(device), dtype, quant)
    answers = answer_questions(lm, tokenizer, questions, max_new_tokens, batch_size, shared_shots, part)
    output_dir = Path(output_dir)
    if part.world_size > 1:
        answers = merge_answers(output_dir / "predictions.jsonl", part, answers)
        if answers is None:  # not the main process: it writes nothing
            return None
    for q, answer in zip(questions, answers):  # a list of golds scores its best match
        q.prediction = answer
        q.exact_match = exact_match(answer, q.gold)
        q.f1 = f1_score(answer, q.gold)
    results = summarize(questions)
    output_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(asdict(q), ensure_ascii=False) for q in questions]
    write_text_atomic(output_dir / "predictions.jsonl", "\n".join(lines) + "\n")
    meta = {
        "model": describe(model),
        "model_dir": None if model_dir is None else str(Path(model_dir).absolute()),
        "eval_data": str(Path(eval_data).absolute()),
        "eval_data_sha256": sha256_file(eval_data),
        "shots": shots,
        "shared_shots": shared_shots,
        "seed": seed,
        "max_new_tokens": max_new_tokens,
        "world_size": part.world_size,
        "training": training_meta(model_dir),
    }
    write_text_atomic(output_dir / "eval_meta.json", json.dumps(meta, indent=2) + "\n")
    write_text_atomic(output_dir / "results.json", json.dumps(results, indent=2) + "\n")
    log.info("wrote %s and %s", output_dir / "results.json", output_dir / "predictions.jsonl")
    return results


def merge_answers(output: Path, part: Share, answers: list[str | None]) -> list[str] | None:
    """Every process's answers on the main process, in question order (None on the other processes)."""
    mine = [i for i, a in enumerate(answers) if a is not None]
    shards = distributed.gather_json(output, part, {"index": mine, "answer": [answers[i] for i in mine]})
    if shards is None:
        return None
    merged: list[str | None] = [None] * len(answers)
    for shard in shards:
        for i, answer in zip(shard["index"], shard["answer"]):
            merged[i] = answer
    if None in merged:  # cannot happen unless processes formed different batches
        raise RuntimeError(f"question {merged.index(None)} was answered by no process")
    return merged  # type: ignore[return-value]


def wiki_questions(eval_data: Path, fewshot_data: Path | None, shots: int, seed: int, max_people: int | None) -> list[Question]:
    """The k-shot prompts of Wikipedia mode (see the module docstring for where the shots come from).

    Raises:
        InputError: A malformed file, no questions, or too few held-out questions for ``shots``.
    """
    contexts, asked = load_wiki(eval_data, "eval_data")
    if not asked:
        raise InputError(f"eval_data={eval_data}: has paragraphs but no questions; give a file with qas/question rows")
    pool, pool_contexts, key = asked, contexts, "eval_data"
    if shots > 0 and is_wiki(fewshot_data):
        pool_contexts, pool = load_wiki(fewshot_data, "fewshot_data")
        key = f"fewshot_data={fewshot_data}"
    elif shots > 0:
        log.info("shots from other paragraphs of eval_data (fewshot_data=%s is not a .json/.jsonl file)", fewshot_data)
        key = f"eval_data={eval_data}"
    if max_people is not None:
        asked = asked[:max_people]
    return build_wiki_questions(asked, contexts, pool, pool_contexts, shots, seed, key)
