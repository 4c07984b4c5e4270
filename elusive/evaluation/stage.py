"""Stage 5: closed-book questions (or the completion probe), greedy decoding, SQuAD exact match and F1.

The questions come from :mod:`elusive.evaluation.questions` (biography QA, completion probe, Wikipedia QA), the answers
from :mod:`elusive.evaluation.generation`. This module runs them and reports: ``results.json`` (per field: exact match,
F1, their 95 % intervals — Wilson for exact match, bootstrap for F1 — and n), ``predictions.jsonl`` (one line per question: person, field,
prompt, gold, prediction, exact_match, f1) and ``eval_meta.json`` (what was evaluated, with which data,
settings, library versions and code, and the adapter's training record).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from elusive.core import distributed
from elusive.core.config import EvaluateConfig, check, default_shots
from elusive.core.distributed import Share
from elusive.core.errors import InputError
from elusive.core.files import atomic_path, sha256_file, strict_json
from elusive.core.models import describe
from elusive.core.outputs import Output, check_outputs, claim_folder
from elusive.core.provenance import code_version, library_versions, machine, record_path
from elusive.evaluation.adapters import check_adapter_base, check_adapter_folder, training_meta
from elusive.evaluation.metrics import exact_match, f1_score
from elusive.evaluation.questions import Question, completion_answer, questions_for
from elusive.reporting.stats import add_intervals, format_table, mean_with_interval
from elusive.text.data import original_rows

log = logging.getLogger(__name__)


def check_inputs(cfg: EvaluateConfig) -> list[Question]:
    """Every setting and input file of an evaluation, checked by building its questions (no model is loaded).

    Raises:
        InputError: Naming the key and the fix.
    """
    check(cfg)
    return questions_for(trained_people(cfg)[0])


def trained_people(cfg: EvaluateConfig) -> tuple[EvaluateConfig, str | None]:
    """``cfg`` with a null ``eval_data`` replaced by the data the adapter in ``model_dir`` was trained on, and
    where that was found (None when ``eval_data`` was given).

    The adapter's ``train_meta.json`` names its dataset (a ``checkpoint-N`` records only its SHA-256: the
    ``train_meta.json`` beside it is used when it names a file of that SHA-256). When that was stage 3's CSV,
    the people are its originals' file, which the augmentation record copied into ``train_meta.json`` names
    (``augmentation.dataset``), never the copies. The file must still be the one trained on (same SHA-256).

    Raises:
        InputError: ``eval_data`` is null and there is no adapter, no record naming its data, or the file named
            there is missing or has changed.
    """
    if cfg.eval_data is not None:
        return cfg, None
    fix = "give eval_data=<tagged CSV of the people to ask about, or a Wikipedia .json/.jsonl>"
    if cfg.model_dir is None:
        raise InputError(f"eval_data=null: model_dir=null has no training record to take the people from; {fix}")
    check_adapter_folder(cfg.model_dir)
    folder = Path(cfg.model_dir)
    record = training_meta(folder) or {}
    if "dataset" not in record and folder.name.startswith("checkpoint-"):
        beside = training_meta(folder.parent) or {}
        if beside.get("dataset_sha256") and beside.get("dataset_sha256") == record.get("dataset_sha256"):
            record = beside
    if not record.get("dataset") or not record.get("dataset_sha256"):
        raise InputError(f"eval_data=null: model_dir={folder} has no train_meta.json naming the data it was trained "
                         f"on; {fix}")
    augmentation = record.get("augmentation")
    if isinstance(augmentation, dict) and augmentation.get("dataset") and augmentation.get("dataset_sha256"):
        path, digest = augmentation["dataset"], augmentation["dataset_sha256"]
        source = f"the originals of {record['dataset']}, named by the augmentation record in its train_meta.json"
    else:
        path, digest = record["dataset"], record["dataset_sha256"]
        source = "the dataset its train_meta.json names"
        if Path(path).is_file() and original_rows(path, "eval_data") is not None:
            raise InputError(f"eval_data=null: model_dir={folder} was trained on {path}, stage 3's copies, and its "
                             f"train_meta.json does not name their originals; {fix}")
    if not Path(path).is_file() or sha256_file(path) != digest:
        what = "is missing here" if not Path(path).is_file() else "has changed since (another SHA-256)"
        raise InputError(f"eval_data=null: model_dir={folder} was trained on the people of {path}, which {what}; {fix}")
    log.info("eval_data=null: asking about the people model_dir=%s was trained on: %s (%s)", folder, path, source)
    return replace(cfg, eval_data=os.path.abspath(path)), f"{record_path(folder)}: {source}"


def evaluate(cfg: EvaluateConfig) -> dict[str, dict] | None:
    """Run stage 5: write ``results.json``, ``predictions.jsonl`` and ``eval_meta.json`` to ``cfg.output_dir``.

    Launched on several processes (accelerate launch, torchrun), ``device=auto`` is this process's GPU and each
    process answers its share of the batches; the main process merges them and writes the files.

    Args:
        cfg: The settings (:class:`elusive.core.config.EvaluateConfig` says what each one means).

    Returns:
        ``{field: {"exact_match": x, "f1": y, "n": n, "exact_match_ci95": [lo, hi], "f1_ci95": [lo, hi]}}``
        (Wikipedia: the one field ``qa``); None on the processes other than the main one of a multi-process
        run (they write nothing).

    Raises:
        InputError: A setting, a data file, the model, the adapter or ``output_dir`` is unusable (before any model
            is loaded), or a prompt does not fit the model's positions (before any model runs).
    """
    started = time.time()
    check(cfg)
    cfg, eval_data_from = trained_people(cfg)
    questions = check_inputs(cfg)
    check_outputs("evaluate", [Output("output_dir", cfg.output_dir, cfg.output_dir, fills=True)],
                  {"model": cfg.model, "model_dir": cfg.model_dir, "eval_data": cfg.eval_data,
                   "fewshot_data": cfg.fewshot_data, "prompts": cfg.prompts})
    check_adapter_base(cfg)
    from elusive.core.models import max_positions
    from elusive.evaluation.adapters import load_for_eval  # torch and transformers: after the checks
    from elusive.evaluation.generation import check_prompt_lengths

    model_dir = None if cfg.model_dir is None else Path(cfg.model_dir)
    lm, tokenizer = load_for_eval(cfg.model, model_dir, distributed.process_device(cfg.device), cfg.dtype, cfg.quant)
    check_prompt_lengths(tokenizer, questions, cfg.max_new_tokens, max_positions(cfg.model))
    part = distributed.share()
    with claim_folder("output_dir", cfg.output_dir, "evaluate") if part.is_main else contextlib.nullcontext():
        return _run(cfg, questions, lm, tokenizer, part, started, eval_data_from)


def evaluate_passes(cfg: EvaluateConfig) -> dict[str, dict] | None:
    """``every_pass=true``: :func:`evaluate` the final adapter into ``output_dir``, then each adapter kept at a pass
    (``model_dir/pass-<E>/``, by E) into ``output_dir/pass-<E>/``; returns the final adapter's results.

    Raises:
        InputError: ``model_dir`` holds no kept pass (or is null), or as :func:`evaluate`.
    """
    from dataclasses import replace

    from elusive.training.checkpoints import kept_passes

    if cfg.model_dir is None or not kept_passes(Path(cfg.model_dir)):
        raise InputError(f"every_pass=true: model_dir={cfg.model_dir} holds no adapter kept at a pass (pass-<E>/ with "
                         "its train_meta.json); train with save_at_passes=[...], or set every_pass=false")
    final = evaluate(replace(cfg, every_pass=False))  # first: output_dir becomes evaluate's folder
    for folder in kept_passes(Path(cfg.model_dir)):
        evaluate(replace(cfg, model_dir=str(folder), output_dir=str(Path(cfg.output_dir) / folder.name),
                         every_pass=False))
    return final


def _run(cfg: EvaluateConfig, questions: list[Question], lm, tokenizer, part: Share, started: float,
         eval_data_from: str | None = None) -> dict[str, dict] | None:
    """Answer, score and write (the part of :func:`evaluate` after every check, under the lock of output_dir)."""
    from elusive.evaluation.generation import answer_questions

    output_dir = Path(cfg.output_dir)
    shared = cfg.shared_shots and cfg.mode == "qa"
    answers = answer_questions(lm, tokenizer, questions, cfg.max_new_tokens, cfg.batch_size, shared, part)
    if part.world_size > 1:
        answers = merge_answers(output_dir / "predictions.jsonl", part, answers)
        if answers is None:  # not the main process: it writes nothing
            return None
    for q, answer in zip(questions, answers):  # a list of golds scores its best match
        q.prediction = completion_answer(answer) if cfg.mode == "completion" else answer
        q.exact_match = exact_match(q.prediction, q.gold)
        q.f1 = f1_score(q.prediction, q.gold)
    results = score_fields(questions, cfg.seed, cfg.bootstrap_resamples)
    lines = [strict_json(asdict(q), indent=None, ensure_ascii=False) for q in questions]
    predictions = ("\n".join(lines) + "\n").encode("utf-8")
    meta = eval_record(cfg, len(questions), part.world_size, time.time() - started, eval_data_from)
    meta["predictions_sha256"] = hashlib.sha256(predictions).hexdigest()  # ties the record to its predictions
    write_folder(output_dir, [("predictions.jsonl", predictions), ("eval_meta.json", strict_json(meta) + "\n"),
                              ("results.json", strict_json(results) + "\n")])
    log.info("wrote %s and %s", output_dir / "results.json", output_dir / "predictions.jsonl")
    return results


def write_folder(folder: Path, files: list[tuple[str, bytes | str]]) -> None:
    """Write an evaluation's files so that a reader never sees one run's file beside another's.

    ``results.json`` is the evaluation's commit: an earlier one goes first (with the ``eval_meta.json`` that
    describes it), then every file is written atomically in order, ``results.json`` last. A kill at any point
    leaves the earlier evaluation whole, or files of this one without ``results.json`` (an unfinished
    evaluation: run_experiment evaluates again, summarize skips the folder), never new predictions under old
    results. ``eval_meta.json`` holds the SHA-256 of the predictions it describes.
    """
    for name in ("results.json", "eval_meta.json"):
        (folder / name).unlink(missing_ok=True)
    for name, data in files:
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def eval_record(cfg: EvaluateConfig, n_questions: int, world_size: int, seconds: float,
                eval_data_from: str | None = None) -> dict:
    """``eval_meta.json``: what was evaluated, on which data (SHA-256, and where it came from when ``eval_data``
    was null: :func:`trained_people`), with which settings and code."""
    model_dir = None if cfg.model_dir is None else Path(cfg.model_dir)

    def digest(path: str) -> str | None:
        return sha256_file(path) if Path(path).is_file() else None

    adapter = None if model_dir is None else model_dir / "adapter_model.safetensors"
    return {
        "model": describe(cfg.model),
        "model_dir": None if model_dir is None else record_path(model_dir),
        "adapter_sha256": digest(str(adapter)) if adapter is not None else None,  # the weights that answered
        "mode": cfg.mode,
        "eval_data": record_path(cfg.eval_data),
        "eval_data_sha256": digest(cfg.eval_data),
        "eval_data_from": eval_data_from,  # null: given as eval_data=
        "max_people": cfg.max_people,
        "fewshot_data_sha256": digest(cfg.fewshot_data),
        "prompts_sha256": digest(cfg.prompts),
        "shots": default_shots(cfg.shots, cfg.mode),
        "shared_shots": cfg.shared_shots,
        "seed": cfg.seed,
        "max_new_tokens": cfg.max_new_tokens,
        "dtype": cfg.dtype,
        "quant": cfg.quant,
        "bootstrap_resamples": cfg.bootstrap_resamples,
        "questions": n_questions,
        "world_size": world_size,
        "wall_time_s": round(seconds, 1),
        "versions": library_versions(),
        "code": code_version(),
        "machine": machine(),
        "training": training_meta(model_dir),
    }


def score_fields(questions: list[Question], seed: int = 0, resamples: int = 2000) -> dict[str, dict]:
    """Mean exact match and F1 per field, as fractions in [0, 1], with their 95 % intervals: Wilson for exact match,
    a seeded percentile bootstrap over the field's questions for F1 (:func:`elusive.reporting.stats.add_intervals`)."""
    results: dict[str, dict] = {}
    by_field: dict[str, list[tuple[float, float]]] = {}
    for q in questions:
        by_field.setdefault(q.field, []).append((q.exact_match, q.f1))
    for field, rows in by_field.items():
        results[field] = {
            "exact_match": float(np.mean([em for em, _ in rows])),
            "f1": float(np.mean([f1 for _, f1 in rows])),
            "n": len(rows),
        }
    return add_intervals(results, by_field, seed, resamples)


def markdown_table(results: dict[str, dict], questions: list[Question] | None = None, seed: int = 0) -> str:
    """Results as a markdown table in percent with 95 % intervals; the mean over fields last (with its interval,
    resampling people, when the questions are given)."""
    mean = None
    if questions is not None and len(results) > 1:
        mean = mean_with_interval([(q.person, q.exact_match, q.f1) for q in questions], seed)
    return format_table(results, mean)


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
