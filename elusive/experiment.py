"""One table row end to end: attention dumps → contrast → augmentation → LoRA training → evaluation.

Folder layout under ``{out_root}/{name}/``::

    data-<hash>.csv                       the training texts (the first ``n_texts`` of a CSV dataset), named by
                                          the SHA-256 of their bytes: never rewritten, so runs of one name with
                                          other texts, at the same time, each train on their own
    dumps/<model>-<aggregate>-<key>.safetensors       one dump per model and extraction settings, shared
    dumps/diff-<large>-<small>-<aggregate>-<key>.safetensors   by every method, alpha, beta and seed
    <method>/<label>-<key>/run.json       every setting that decides the run's results (its key hashes them)
    <method>/<label>-<key>/aug.csv        augmented data (plain: the unchanged copies, if any)
    <method>/<label>-<key>/lora/          the adapter, train_meta.json and loss.csv
    <method>/<label>-<key>/eval/          mode=qa: results.json, predictions.jsonl, eval_meta.json
    <method>/<label>-<key>/eval_completion/  mode=completion, the same files
    <method>/<label>-<key>/pass-<E>/eval*/    with train.save_at_passes: the adapter kept after E passes
                                          (lora/pass-<E>/), evaluated the same way; the final adapter gets
                                          eval*/ only when it is not one of the kept passes

``label`` is readable (``a0.7_b0.05_s0``); ``key`` is the first 10 hex digits of the SHA-256 of the run's
settings (:func:`run_settings`): a sweep over learning rate, epochs, layers, ... never writes into another
setting's folder. A rerun skips what is already done — a dump whose key matches, an adapter whose
``train_meta.json`` exists, an evaluation whose ``results.json`` exists — and resumes an interrupted training
from its last complete checkpoint, so a crashed sweep continues where it stopped. Every input file and
setting is checked before anything is extracted (``dry_run=true`` stops after the checks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from pathlib import Path

from elusive.attention.dump import dump_path
from elusive.core.config import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    ContrastAttentionConfig,
    DataAugmentationConfig,
    EvaluateConfig,
    RunExperimentConfig,
    SaveAttentionConfig,
    TrainConfig,
    check,
)
from elusive.core.distributed import launched
from elusive.core.errors import InputError
from elusive.core.files import sha256_file, write_text_atomic
from elusive.core.models import describe
from elusive.core.provenance import record_path
from elusive.text.data import load_texts, read_csv
from elusive.text.wiki import is_wiki

log = logging.getLogger(__name__)

RANKED = {"attention": "attention", "attention_diff": "attention_diff", "released": "attention_diff"}
LATER_TRAIN_KEYS = {"warmup_passes": None, "lr_schedule": "linear", "save_at_passes": []}
"""Training settings added after runs were committed: they enter a run's key only when not at these defaults,
so a run made before they existed keeps its folder (and a rerun finds it)."""
"""Methods that rank tokens by a dump, and the augment_type they use."""
EVAL_FOLDERS = {"qa": "eval", "completion": "eval_completion"}


def slug(model: str) -> str:
    """A file-name-safe short name for a model id or path."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model.rstrip("/")).name or model).strip("_")


def short_hash(payload: object) -> str:
    """The first 10 hex digits of the SHA-256 of ``payload`` as canonical JSON."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def resolve_params(cfg: RunExperimentConfig) -> tuple[float, float]:
    """alpha and beta for the run: explicit values win, else the preset's ``method_params[method]``."""
    preset = cfg.method_params.get(cfg.method, {})
    alpha = cfg.alpha if cfg.alpha is not None else preset.get("alpha", DEFAULT_ALPHA)
    beta = cfg.beta if cfg.beta is not None else preset.get("beta", DEFAULT_BETA)
    return float(alpha), float(beta)


def model_identity(model: str | None) -> str | None:
    """What a run or dump key names a model by: its content, the SHA-256 of its ``config.json`` and of its weight
    files (:func:`elusive.core.identity.base_identity`, the identity train.py records and evaluate.py checks), so new
    weights under the same path never reuse old dumps, adapters or scores; ``model`` as given (a hub id) when
    neither can be found on this machine."""
    if model is None:
        return None
    from elusive.core.identity import base_identity

    found = base_identity(model)
    if found["config_sha256"] is None and found["weights_sha256"] is None:
        return model
    return f"config:{(found['config_sha256'] or '-')[:16]},weights:{(found['weights_sha256'] or '-')[:16]}"


# --------------------------------------------------------------------------------------------------
# Checks (dry_run stops after them)
# --------------------------------------------------------------------------------------------------


def validate(cfg: RunExperimentConfig) -> None:
    """Refuse inconsistent settings and unusable input files before any work starts.

    Reads every data file the stages will read (dataset, eval data, few-shot people, prompts) with the
    stages' own readers, and checks that local model paths exist — without loading any model.

    Raises:
        InputError: Naming the key and the fix.
    """
    check(cfg)
    if cfg.method in ("attention_diff", "released") and not (cfg.small_model and cfg.large_model):
        raise InputError(f"method={cfg.method}: needs small_model=<...> and large_model=<...> (a same-family pair)")
    if cfg.n_texts is not None and is_wiki(cfg.dataset):
        raise InputError(
            f"n_texts={cfg.n_texts}: only cuts CSV datasets; dataset={cfg.dataset} (Wikipedia .json/.jsonl) is used "
            "whole, so set n_texts=null (or give a smaller file)"
        )
    from elusive.augment.stage import check_schedule
    from elusive.core.models import check_model_path
    from elusive.core.outputs import Output, check_outputs
    from elusive.evaluation.stage import check_inputs  # the stage's own readers (no model)

    if cfg.method != "plain":
        check_schedule(RANKED.get(cfg.method, cfg.method), resolve_params(cfg)[0])
    load_texts(cfg.dataset, "dataset")
    eval_data = cfg.eval_data or cfg.dataset
    for mode in cfg.modes:
        check_inputs(eval_config(cfg, Path(eval_data), Path("unused"), Path("unused"), mode))
    for key in ("model", "small_model", "large_model"):
        if getattr(cfg, key) is not None and (key == "model" or cfg.method in RANKED):
            check_model_path(getattr(cfg, key), key)
    check_devices(cfg)
    check_layers(cfg)
    root = Path(cfg.out_root) / cfg.name
    # last: a sweep's check before its first job stops here (elusive.core.outputs.paths_only), after every other check
    check_outputs("run_experiment", [Output("out_root", cfg.out_root, root, folder=True)],
                  {"dataset": cfg.dataset, "eval_data": cfg.eval_data, "fewshot_data": cfg.evaluate.fewshot_data,
                   "prompts": cfg.evaluate.prompts, "model": cfg.model, "small_model": cfg.small_model,
                   "large_model": cfg.large_model})


def check_layers(cfg: RunExperimentConfig) -> None:
    """``layers=`` against the layer count of every model stage 1 will score, read from the config of a model on
    this machine (:func:`elusive.core.models.num_layers`; a hub id is checked when stage 1 loads it).

    Raises:
        InputError: A layer index the model does not have, naming the model.
    """
    if cfg.layers is None:
        return
    keys = ("large_model", "small_model") if cfg.method in ("attention_diff", "released") else (
        ("model",) if cfg.method == "attention" else ())
    from elusive.core.models import num_layers

    for key in keys:
        if not Path(str(getattr(cfg, key))).expanduser().exists():
            continue
        n_layers = num_layers(getattr(cfg, key))
        bad = [layer for layer in cfg.layers if n_layers is not None and not -n_layers <= layer < n_layers]
        if bad:
            raise InputError(f"layers={list(cfg.layers)}: layer {bad[0]} does not exist in {key}={getattr(cfg, key)} "
                             f"({n_layers} layers); fix layers (negative indices count from the end)")


def check_devices(cfg: RunExperimentConfig) -> None:
    """Refuse a GPU device (``device``, ``attention.device``) on a machine without one, before anything is written
    (the run key resolves them). CPU and ``auto`` need no check (and no torch import).

    Raises:
        InputError: Naming the key.
    """
    for key, device in (("device", cfg.device), ("attention.device", cfg.attention.device)):
        if device is not None and (device.startswith("cuda") or device == "multi"):
            from elusive.core.models import resolve_device

            try:
                resolve_device(device)
            except InputError as err:
                raise InputError(f"{key}={device}: {str(err).split(': ', 1)[-1]}") from err


# --------------------------------------------------------------------------------------------------
# The run's settings and folders
# --------------------------------------------------------------------------------------------------


def run_settings(cfg: RunExperimentConfig, data: Path) -> dict:
    """Every setting that changes the run's results (the run folder's key hashes them; run.json records them).

    Left out: the output folders, ``modes`` (each mode is its own evaluation folder), ``dry_run``, ``device`` and
    evaluation's batch size (on the CPU in float32 neither changes predictions). Extraction's batch size stays in: it
    moves the scores by ~1e-8 (another padding, other float sums), which can swap two close ranks. Elsewhere (GPUs,
    bf16) device and batch sizes change results slightly: ``numerics`` then records them (:func:`numerics_key`).
    Models are named by content (:func:`model_identity`).
    """
    alpha, beta = resolve_params(cfg)
    ranked = cfg.method in RANKED
    evaluate = dataclasses.asdict(cfg.evaluate)
    evaluate.pop("batch_size")
    for key in ("fewshot_data", "prompts"):
        path = Path(evaluate[key])
        evaluate[key + "_sha256"] = sha256_file(path) if path.is_file() else None
        evaluate[key] = path.name
    attention = dataclasses.asdict(cfg.attention)
    attention.pop("device")  # where it ran: numerics_key records it when it matters
    eval_data = Path(cfg.eval_data) if cfg.eval_data is not None else data
    numerics = numerics_key(cfg, ranked)
    return {
        "method": cfg.method,
        "alpha": None if cfg.method == "plain" else alpha,
        "beta": None if cfg.method in ("plain", "random") else beta,
        "multiply": cfg.plain_copies if cfg.method == "plain" else cfg.multiply,
        "seed": cfg.seed,
        "model": model_identity(cfg.model),
        "small_model": model_identity(cfg.small_model) if cfg.method in ("attention_diff", "released") else None,
        "large_model": model_identity(cfg.large_model) if cfg.method in ("attention_diff", "released") else None,
        "dataset_sha256": sha256_file(data),
        "n_texts": cfg.n_texts,
        "eval_data_sha256": sha256_file(eval_data),
        "text_prefix": dump_prefix(cfg),
        "layers": cfg.layers if ranked else None,
        "aggregate": aggregate_of(cfg.method) if ranked else None,
        "attention": attention if ranked else None,
        "train": {k: v for k, v in dataclasses.asdict(cfg.train).items()
                  if k not in LATER_TRAIN_KEYS or v != LATER_TRAIN_KEYS[k]},
        "evaluate": evaluate,
        **({} if numerics is None else {"numerics": numerics}),
    }


def attention_device(cfg: RunExperimentConfig) -> str:
    """The device of stage 1: ``attention.device``, else the run's."""
    return cfg.attention.device or cfg.device


def numerics_key(cfg: RunExperimentConfig, ranked: bool) -> dict | None:
    """Per stage, the device type, GPUs, dtype (:func:`elusive.core.models.numerics`) and batch size that decide its
    exact numbers; None when every stage runs on the CPU in float32, where they do not (so such runs keep their
    keys)."""
    from elusive.core.models import numerics

    stages = {"train": (numerics(cfg.device, cfg.train.dtype), cfg.train.batch_size),
              "evaluate": (numerics(cfg.device, cfg.evaluate.dtype), cfg.evaluate.batch_size)}
    if ranked:
        stages["attention"] = (numerics(attention_device(cfg), cfg.attention.dtype), cfg.attention.batch_size)
    if all(record is None for record, _ in stages.values()):
        return None
    return {stage: {**(record or {"device": "cpu", "devices": 1, "dtype": "float32"}), "batch_size": batch}
            for stage, (record, batch) in stages.items()}


def aggregate_of(method: str) -> str:
    """The stage-1 score a ranked method uses: the released code's for ``released``, else ``received``."""
    return "released" if method == "released" else "received"


def run_folder(root: Path, settings: dict) -> Path:
    """``root/<method>/<label>-<key>``: a readable label and the hash of every setting."""
    method, seed = settings["method"], settings["seed"]
    if method == "plain":
        label = f"c{settings['multiply']}_s{seed}"
    elif method == "random":
        label = f"a{settings['alpha']}_s{seed}"
    else:
        label = f"a{settings['alpha']}_b{settings['beta']}_s{seed}"
    return root / method / f"{label}-{short_hash(settings)}"


def training_data(cfg: RunExperimentConfig, root: Path, write: bool = True) -> Path:
    """The first ``n_texts`` rows of ``dataset`` as ``root/data-<hash>.csv`` (named by content, written once).

    A Wikipedia ``.json``/``.jsonl`` dataset is returned as it is (``n_texts`` must be null). ``write=False``
    only names the file (a reader looking for runs made on it does not create it).
    """
    if cfg.n_texts is None:
        return Path(cfg.dataset)
    frame = read_csv(cfg.dataset, "dataset").head(cfg.n_texts)
    text = frame.to_csv(index=False, lineterminator="\n")
    # named by its content and never rewritten: two runs of one name at once, on other texts, cannot swap each
    # other's data between their augmentation and their training
    path = root / f"data-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}.csv"
    if write and (not path.exists() or path.read_text(encoding="utf-8") != text):
        write_text_atomic(path, text)
    return path


def dump_prefix(cfg: RunExperimentConfig) -> str:
    """The text_prefix of the method's dumps: none for ``released`` (the released code adds none)."""
    return "" if cfg.method == "released" else cfg.text_prefix


def ensure_dump(model: str, data: Path, root: Path, cfg: RunExperimentConfig, aggregate: str) -> Path:
    """``model``'s attention dump of ``data``, extracted unless one with the same settings exists.

    The file name carries the hash of everything that decides the scores (the model by content, dataset,
    aggregate, layers, dtype, quantisation, text_prefix, length limit, batch size; on GPUs or in bf16 also the
    device type and GPUs), so a dump is reused only when all of them match.
    """
    from elusive.core.models import numerics

    attention = dataclasses.asdict(cfg.attention)
    device = attention_device(cfg)
    attention["device"] = device
    settings = {"model": model_identity(model), "dataset_sha256": sha256_file(data), "aggregate": aggregate,
                "layers": cfg.layers, "text_prefix": dump_prefix(cfg),
                **{k: v for k, v in attention.items() if k != "device"}}
    record = numerics(device, cfg.attention.dtype)
    if record is not None:  # on GPUs and in bf16 the scores depend (slightly) on these too
        settings["numerics"] = {**record, "batch_size": cfg.attention.batch_size}
    out = root / "dumps" / f"{slug(model)}-{aggregate}-{short_hash(settings)}"
    if dump_path(out).is_file():
        log.info("reusing %s", dump_path(out))
        return dump_path(out)
    from elusive.attention.stage import save_attention

    return save_attention(SaveAttentionConfig(
        model=model, dataset=str(data), save_name=str(out), aggregate=aggregate, layers=cfg.layers,
        text_prefix=dump_prefix(cfg), seed=cfg.seed, **attention))


def ranking_dump(cfg: RunExperimentConfig, data: Path, root: Path) -> Path | None:
    """The dump that ranks the tokens of a ranked method (a contrast for attention_diff and released)."""
    if cfg.method not in RANKED:
        return None
    aggregate = aggregate_of(cfg.method)
    if cfg.method == "attention":  # the paper's "dropout by attention": the trained model's own attention
        return ensure_dump(cfg.model, data, root, cfg, aggregate)
    large = ensure_dump(cfg.large_model, data, root, cfg, aggregate)
    small = ensure_dump(cfg.small_model, data, root, cfg, aggregate)
    out = root / "dumps" / f"diff-{large.stem}--{small.stem}"
    if dump_path(out).is_file():
        return dump_path(out)
    from elusive.attention.contrast import contrast_attention

    return contrast_attention(ContrastAttentionConfig(attn_dump_large=str(large), attn_dump_small=str(small),
                                                      attn_diff=str(out)))


def eval_config(cfg: RunExperimentConfig, eval_data: Path, run: Path, adapter: Path, mode: str) -> EvaluateConfig:
    """The stage-5 config of one evaluation mode of the run."""
    return EvaluateConfig(model=cfg.model, model_dir=str(adapter), eval_data=str(eval_data),
                          output_dir=str(run / EVAL_FOLDERS[mode]), mode=mode, device=cfg.device, seed=cfg.seed,
                          **dataclasses.asdict(cfg.evaluate))


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def run_experiment(cfg: RunExperimentConfig) -> dict[str, dict] | None:
    """Run (or resume) every stage of one experiment and return ``{mode: results}`` (None for ``dry_run``).

    Raises:
        InputError: A setting or input file is unusable (found before any model is loaded).
    """
    if launched():  # its stages read each other's files, which only the main process writes
        raise InputError(
            "run_experiment.py runs in one process; to use several GPUs, launch the stage scripts "
            "(save_attention.py, train.py, evaluate.py) with accelerate launch (README: Scaling out)"
        )
    validate(cfg)
    root = Path(cfg.out_root) / cfg.name
    if cfg.dry_run:
        from elusive.core.identity import locate

        unresolved = []
        for key in ("model", "small_model", "large_model"):  # where each model comes from (hub ids too)
            if getattr(cfg, key) is not None and (key == "model" or cfg.method in RANKED):
                found, where = locate(getattr(cfg, key), key)
                (log.info if found else log.warning)("%s", where)
                unresolved += [] if found else [key]
        but = f" except {', '.join(unresolved)} (not found here)" if unresolved else ""
        log.info("dry run: every input and setting is usable%s; nothing was written", but)
        return None
    data = training_data(cfg, root)
    settings = run_settings(cfg, data)
    run = run_folder(root, settings)
    recorded = run / "run.json"
    info = {"name": cfg.name, "settings": settings, **_summary_columns(cfg, settings, data)}
    before = json.loads(recorded.read_text()) if recorded.is_file() else {}
    if before and before.get("settings") != settings:
        raise InputError(f"{run}: holds a run with other settings (a hash collision?); delete it or use another out_root")
    info["invocations"] = invocations(before.get("invocations", []))
    write_text_atomic(recorded, json.dumps(info, indent=2, allow_nan=False) + "\n")

    adapter = run / "lora"
    if (adapter / "train_meta.json").is_file():
        log.info("skipping training: %s is complete", adapter)
    else:
        train_csv = augmented_data(cfg, data, root, run)
        from elusive.training.checkpoints import last_complete_checkpoint
        from elusive.training.stage import train

        resume = last_complete_checkpoint(adapter) is not None
        train(TrainConfig(model=cfg.model, dataset=str(train_csv), model_dir=str(adapter), device=cfg.device,
                          seed=cfg.seed, resume=resume, **dataclasses.asdict(cfg.train)))
    eval_data = Path(cfg.eval_data) if cfg.eval_data is not None else data
    results = {}
    for folder, adapter_dir in evaluated_adapters(cfg, run, adapter):
        for mode in cfg.modes:
            out = folder / EVAL_FOLDERS[mode]
            if (out / "results.json").is_file():
                log.info("skipping evaluation (%s): %s exists", mode, out / "results.json")
                results[mode] = json.loads((out / "results.json").read_text())
                continue
            from elusive.evaluation.stage import evaluate

            results[mode] = evaluate(eval_config(cfg, eval_data, folder, adapter_dir, mode))
    log.info("finished %s: %s", run, json.dumps(results))
    return results  # the last adapter's


def evaluated_adapters(cfg: RunExperimentConfig, run: Path, adapter: Path) -> list[tuple[Path, Path]]:
    """``(folder its evaluations go to, adapter)`` for every adapter of the run to evaluate: each kept pass
    (``run/pass-<E>``), then the final adapter (``run``) unless it is the last kept pass."""
    passes = [int(e) for e in cfg.train.save_at_passes]
    out = [(run / f"pass-{e}", adapter / f"pass-{e}") for e in passes]
    if not passes or float(cfg.train.epochs) != float(passes[-1]):
        out.append((run, adapter))
    return out


def invocations(earlier: list[dict]) -> list[dict]:
    """The machines and code that worked on a run, oldest first: ``earlier`` plus this invocation's, unless it
    is the same as the last one (a resumed run on another machine, or after a code change, adds a line)."""
    from elusive.core.provenance import code_version, machine

    now = {"machine": machine(), "code": code_version()}
    return earlier if earlier and earlier[-1] == now else [*earlier, now]


def augmented_data(cfg: RunExperimentConfig, data: Path, root: Path, run: Path) -> Path:
    """The training CSV of the run's method (written by stage 3; plain without copies trains on ``data``)."""
    alpha, beta = resolve_params(cfg)
    if cfg.method == "plain" and not cfg.plain_copies:
        return data
    from elusive.augment.stage import data_augmentation

    if cfg.method == "plain":  # the same number of steps as the augmented runs: unchanged copies
        aug = DataAugmentationConfig(augment_type="random", alpha=0.0, beta=0.0, multiply=cfg.plain_copies,
                                     model=cfg.model, dataset=str(data), save_name=str(run / "aug"), seed=cfg.seed,
                                     text_prefix=cfg.text_prefix)
    else:
        dump = ranking_dump(cfg, data, root)
        aug = DataAugmentationConfig(augment_type=RANKED.get(cfg.method, cfg.method), alpha=alpha, beta=beta,
                                     multiply=cfg.multiply, attn_weights=None if dump is None else str(dump),
                                     model=cfg.model, dataset=str(data), save_name=str(run / "aug"), seed=cfg.seed,
                                     text_prefix=dump_prefix(cfg))
    return data_augmentation(aug)


def _summary_columns(cfg: RunExperimentConfig, settings: dict, data: Path) -> dict:
    """The flat columns summarize.py shows (name, method, model, pair, alpha, beta, multiply, seed, ...)."""
    texts = len(load_texts(data, "dataset"))
    return {
        "method": cfg.method,
        "model": describe(cfg.model),
        "pair": f"{describe(cfg.large_model)} - {describe(cfg.small_model)}" if settings["large_model"] else "",
        "alpha": settings["alpha"],
        "beta": settings["beta"],
        "multiply": settings["multiply"],
        "seed": cfg.seed,
        "dataset": record_path(data),
        "n_texts": texts,
        "epochs": cfg.train.epochs,
        "learning_rate": cfg.train.learning_rate,
    }
