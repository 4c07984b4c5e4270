"""One table row end to end: attention dumps → contrast → augmentation → LoRA training → evaluation.

Folder layout under ``{out_root}/{name}/``::

    data.csv                          the training texts (the first ``n_texts`` of ``dataset``; not written for a
                                      Wikipedia .json/.jsonl dataset, which is used whole: its paragraphs are the
                                      training texts and, with eval_data=null, its questions are asked)
    attention/<model-slug>.safetensors  one dump per model, shared by every method, alpha, beta and seed
    attention/diff_<large>_<small>.safetensors
    <method>/<run>/aug.csv            augmented data (run = a<alpha>_b<beta>_s<seed>)
    <method>/<run>/lora/              the adapter
    <method>/<run>/eval/              results.json, predictions.jsonl
    <method>/<run>/run.json           what the summary needs: name, method, model, pair, alpha, beta, seed, ...

Dumps are reused when they already exist for the same dataset and model; everything else is redone.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path


from elusive.artifacts import AttentionDump, dump_path, sha256_file, write_text_atomic
from elusive.attention import save_attention
from elusive.augment import data_augmentation
from elusive.contrast import contrast_attention
from elusive.data import read_csv
from elusive.distributed import launched
from elusive.errors import InputError
from elusive.evaluation import evaluate
from elusive.training import train
from elusive.wiki import is_wiki, load_contexts

log = logging.getLogger(__name__)

METHODS = ("plain", "random", "attention", "attention_diff", "shuffled")


@dataclass
class Experiment:
    """The settings of one run (see ``conf/run_experiment.yaml`` for the meaning of every field)."""

    name: str
    method: str
    model: str
    dataset: Path
    eval_data: Path | None = None
    small_model: str | None = None
    large_model: str | None = None
    alpha: float | None = None
    beta: float | None = None
    method_params: dict[str, dict[str, float]] = field(default_factory=dict)
    multiply: int = 10
    plain_copies: int = 0
    n_texts: int | None = None
    text_prefix: str = ""
    layers: list[int] | None = None
    seed: int = 0
    out_root: Path = Path("out/experiments")
    attention: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    evaluate: dict = field(default_factory=dict)
    device: str = "auto"


def slug(model: str) -> str:
    """A file-name-safe short name for a model id or path."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model.rstrip("/")).name or model).strip("_")


def resolve_params(exp: Experiment) -> tuple[float, float]:
    """alpha and beta for the run: explicit values win, else the preset's ``method_params[method]``."""
    preset = exp.method_params.get(exp.method, {})
    alpha = exp.alpha if exp.alpha is not None else preset.get("alpha", 0.7)
    beta = exp.beta if exp.beta is not None else preset.get("beta", 0.05)
    return float(alpha), float(beta)


def validate(exp: Experiment) -> None:
    """Refuse inconsistent settings before any work starts."""
    if exp.method not in METHODS:
        raise InputError(f"method={exp.method}: unknown; use one of {', '.join(METHODS)}")
    if exp.method == "attention_diff" and not (exp.small_model and exp.large_model):
        raise InputError("method=attention_diff: needs small_model=<...> and large_model=<...> (a same-family pair)")
    if exp.plain_copies < 0:
        raise InputError(f"plain_copies={exp.plain_copies}: must be >= 0")
    if exp.n_texts is not None and exp.n_texts < 1:
        raise InputError(f"n_texts={exp.n_texts}: must be >= 1 or null")
    _check_wiki_n_texts(exp)


def _check_wiki_n_texts(exp: Experiment) -> None:
    if exp.n_texts is not None and is_wiki(exp.dataset):
        raise InputError(
            f"n_texts={exp.n_texts}: only cuts CSV datasets; dataset={exp.dataset} (Wikipedia .json/.jsonl) is used "
            "whole, so set n_texts=null (or give a smaller file)"
        )


def training_data(exp: Experiment, root: Path) -> Path:
    """The first ``n_texts`` rows of ``dataset`` as ``root/data.csv`` (rewritten only when it changes).

    A Wikipedia ``.json``/``.jsonl`` dataset is returned as it is (``n_texts`` must be null).
    """
    _check_wiki_n_texts(exp)
    if exp.n_texts is None:
        return exp.dataset
    frame = read_csv(exp.dataset, "dataset").head(exp.n_texts)
    path = root / "data.csv"
    text = frame.to_csv(index=False, lineterminator="\n")
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)
    return path


def ensure_dump(model: str, dataset: Path, out: Path, exp: Experiment) -> Path:
    """Extract ``model``'s attention on ``dataset`` unless a matching dump already exists."""
    path = dump_path(out)
    if path.exists():
        meta = AttentionDump.load(path).metadata
        if meta.get("dataset_sha256") == sha256_file(dataset) and meta.get("text_prefix") == json.dumps(exp.text_prefix):
            log.info("reusing %s", path)
            return path
    return save_attention(model, dataset, out, text_prefix=exp.text_prefix, layers=exp.layers, device=exp.device, **exp.attention)


def run_experiment(exp: Experiment) -> dict[str, dict[str, float]]:
    """Run every stage of one experiment and return the evaluation results."""
    if launched():  # its stages read each other's files, which only the main process writes
        raise InputError(
            "run_experiment.py runs in one process; to use several GPUs, launch the stage scripts "
            "(save_attention.py, train.py, evaluate.py) with accelerate launch (README: Scaling out)"
        )
    validate(exp)
    alpha, beta = resolve_params(exp)
    root = Path(exp.out_root) / exp.name
    root.mkdir(parents=True, exist_ok=True)
    data = training_data(exp, root)
    run = root / exp.method / (f"s{exp.seed}" if exp.method == "plain" else f"a{alpha}_b{beta}_s{exp.seed}")
    run.mkdir(parents=True, exist_ok=True)

    attn = None
    if exp.method == "attention":
        ranker = exp.model  # the paper's "dropout by attention": the trained model's own attention
        attn = ensure_dump(ranker, data, root / "attention" / slug(ranker), exp)
    elif exp.method == "attention_diff":
        large = ensure_dump(exp.large_model, data, root / "attention" / slug(exp.large_model), exp)
        small = ensure_dump(exp.small_model, data, root / "attention" / slug(exp.small_model), exp)
        attn = contrast_attention(large, small, root / "attention" / f"diff_{slug(exp.large_model)}_{slug(exp.small_model)}")

    if exp.method == "plain":
        if exp.plain_copies:  # the same number of steps as the augmented runs: unchanged copies
            train_csv = data_augmentation("random", 0.0, 0.0, exp.plain_copies, exp.model, data, run / "aug", seed=exp.seed)
        else:
            train_csv = data
    else:
        augment_type = "random" if exp.method == "random" else exp.method
        train_csv = data_augmentation(
            augment_type, alpha, beta, exp.multiply, exp.model, data, run / "aug", attn, seed=exp.seed,
            text_prefix=exp.text_prefix,
        )
    train(exp.model, train_csv, run / "lora", seed=exp.seed, device=exp.device, **exp.train)
    results = evaluate(
        exp.model, exp.eval_data or data, run / "eval", model_dir=run / "lora", seed=exp.seed, device=exp.device, **exp.evaluate
    )
    info = {
        "name": exp.name,
        "method": exp.method,
        "model": exp.model,
        "pair": f"{exp.large_model} - {exp.small_model}" if exp.method == "attention_diff" else "",
        "alpha": None if exp.method == "plain" else alpha,
        "beta": None if exp.method in ("plain", "random") else beta,
        "multiply": 0 if exp.method == "plain" else exp.multiply,
        "plain_copies": exp.plain_copies if exp.method == "plain" else 0,
        "seed": exp.seed,
        "dataset": str(data),
        "n_texts": len(load_contexts(data, "dataset")) if is_wiki(data) else len(read_csv(data, "dataset")),
        "epochs": exp.train.get("epochs"),
        "learning_rate": exp.train.get("learning_rate"),
    }
    write_text_atomic(run / "run.json", json.dumps(info, indent=2) + "\n")
    log.info("finished %s: %s", run, json.dumps(results))
    return results
