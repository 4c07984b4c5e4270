"""Every setting of every script, defined once: its type, default, one-line help and the rule it must meet.

Each top-level script has one dataclass here. Hydra composes the script's config from it (a structured
config: OmegaConf converts ``5e-4`` to a float and refuses ``alpha=abc``), ``--help`` prints its fields with
their help (:func:`help_text`), :func:`check` applies every field's rule before any work starts, and the stage
function receives the dataclass itself, so no key is forwarded by hand and no default is written twice.
Experiment presets (``conf/experiment/*.yaml``) reuse the stage settings (:class:`TrainSettings`, ...).

Where a default comes from the paper or from the authors' released code, its help says which; "this
project's choice" marks the rest (``docs/paper_settings.md`` has the paper's settings as facts).

This module imports no torch and no transformers, so ``--help`` and config errors are instant.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from elusive.core.errors import InputError

SEED_MAX = 2**32 - 1  # numpy, torch and the Trainer all accept seeds in [0, 2**32)
DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTS = (None, "8bit", "4bit")
AUGMENT_TYPES = ("random", "attention", "attention_diff", "shuffled", "position")
AGGREGATES = ("received", "sum", "released")
METHODS = ("plain", "random", "attention", "attention_diff", "shuffled", "position", "released")
MODES = ("qa", "completion")
RELEASED_TIES = ("position", "numpy")
FIELD_ORDER_MODES = ("fixed", "permuted")  # make_biographies.py field_order (or an explicit permutation of fields)
TEMPLATE_MODES = ("paper", "varied")  # make_biographies.py template: the paper's frame per field, or several
DEFAULT_ALPHA = 0.7  # stage 3's largest drop probability when neither the command line nor a preset sets one
DEFAULT_BETA = 0.05  # stage 3's rank rate of p(r), likewise
SHOTS = {"qa": 5, "completion": 0}  # solved examples before each question when shots=null, per mode
REPORT_TARGETS = ("none", "all", "azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte", "kubeflow",
                  "mlflow", "neptune", "swanlab", "tensorboard", "trackio", "wandb")  # transformers 5.23's loggers


# --------------------------------------------------------------------------------------------------
# Rules: what a value must be, with the words that say so in an error
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A test a setting's value must pass and the text naming it (``must be >= 1``)."""

    test: Callable[[Any], bool]
    text: str


def _num(x: float) -> str:
    """A bound as written: integers in full (4294967295, not 4.29497e+09), other numbers short."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def at_least(low: float, why: str = "") -> Rule:
    return Rule(lambda v: v >= low, f"must be >= {_num(low)}{why}")


def above(low: float, why: str = "") -> Rule:
    return Rule(lambda v: v > low, f"must be > {_num(low)}{why}")


def within(low: float, high: float, why: str = "", open_high: bool = False) -> Rule:
    bracket = ")" if open_high else "]"
    return Rule(lambda v: low <= v and (v < high if open_high else v <= high),
                f"must be in [{_num(low)}, {_num(high)}{bracket}{why}")


def one_of(*choices: Any) -> Rule:
    shown = ", ".join("null" if c is None else str(c) for c in choices)
    return Rule(lambda v: v in choices, f"unknown; use one of {shown}")


def default_shots(shots: int | None, mode: str) -> int:
    """``shots`` as given, else the mode's default (:data:`SHOTS`)."""
    return shots if shots is not None else SHOTS[mode]


def _int_list(value: Any, low: int | None = None) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(v, int) and not isinstance(v, bool) and (low is None or v >= low) for v in value))


DEVICE = Rule(lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?|multi", v) is not None,
              "unknown device; use auto, cpu, cuda, cuda:N or multi")
LAYERS = Rule(_int_list, "must be a non-empty list of layer indices (negative = from the end), e.g. [0,-1]")
MODE_LIST = Rule(lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and set(v) <= set(MODES)
                 and len(set(v)) == len(v), f"must be a non-empty list of distinct modes ({', '.join(MODES)}), "
                 "e.g. [qa] or [qa,completion]")
REPORT_TO = Rule(lambda v: isinstance(v, (list, tuple)) and set(v) <= set(REPORT_TARGETS),
                 f"must be a list of Trainer loggers ({', '.join(REPORT_TARGETS)}), e.g. [tensorboard] or []")
ROWS = Rule(lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or _int_list(v, 0),
            "must be a row number or a non-empty list of them (0-based), e.g. rows=[0,1,2] or rows=5")
NAME = Rule(lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", v) is not None,
            "must be one folder name of letters, digits, '.', '_' or '-' (no '/', spaces or leading '.'), e.g. "
            "name=my_study")


SEED = within(0, SEED_MAX, " (an integer seed)")
MULTIPLY = Rule(lambda v: 1 <= v <= 1000, "must be a whole number in [1, 1000] (augmented copies per text)")
ALPHA = within(0, 1, " (the largest drop probability)")
BETA = at_least(0, " (how fast the drop probability rises with rank)")


def _method_params_ok(value: Any) -> bool:
    """``{method: {alpha: a, beta: b}}`` with known methods, only alpha/beta, finite values within their rules."""
    if not isinstance(value, dict):
        return False
    for method, params in value.items():
        if method not in METHODS or not isinstance(params, dict) or not set(params) <= {"alpha", "beta"}:
            return False
        for key, rule in (("alpha", ALPHA), ("beta", BETA)):
            v = params.get(key)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and rule.test(v)):
                return False
    return True


METHOD_PARAMS = Rule(_method_params_ok, f"must map methods ({', '.join(METHODS)}) to {{alpha: a in [0, 1], beta: "
                     "b >= 0}}, finite numbers, e.g. {random: {alpha: 0.6}}")


def setting(default: Any, help: str, rule: Rule | None = None, null: str | None = None, path: bool = False,
            output: bool = False) -> Any:
    """A dataclass field with its help text and rule.

    Args:
        default: The default (``MISSING`` for a required key; lists and dicts are copied per instance).
        help: One line: what the key means, typical values, where the default comes from.
        rule: What a (non-null) value must satisfy.
        null: What ``null`` means, when the key may be null (appended to the rule's error text).
        path: The value is a file or folder path (resolved against the launch directory by the scripts).
        output: The path names what the script writes (a sweep checks every job's outputs before the first job).
    """
    metadata = {"help": help, "rule": rule, "null": null, "path": path, "output": output}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def path_setting(default: Any, help: str, null: str | None = None, output: bool = False) -> Any:
    """A :func:`setting` whose value is a path (typed ``str`` so Hydra can save it as plain YAML)."""
    return setting(default, help, null=null, path=True, output=output)


def output_path(default: Any, help: str, null: str | None = None) -> Any:
    """A :func:`path_setting` naming what the script writes."""
    return path_setting(default, help, null=null, output=True)


# --------------------------------------------------------------------------------------------------
# Shared groups of settings (a stage's own settings; run_experiment forwards them as a group)
# --------------------------------------------------------------------------------------------------


@dataclass
class AttentionSettings:
    """Stage 1 settings that run_experiment forwards as ``attention.<key>``."""

    batch_size: int = setting(8, "texts per forward pass (grouped by length; on the CPU in float32 scores do not "
                              "depend on it, on GPUs only approximately)", at_least(1))
    dtype: str = setting("auto", "auto (bf16 on CUDA, fp32 on CPU; bfloat16 with aggregate=released, as the released "
                         "code), float32, bfloat16, float16", one_of(*DTYPES))
    quant: Optional[str] = setting(None, "null, 8bit or 4bit (bitsandbytes; run here on the CPU only) for models too large "
                                   "otherwise", one_of(*QUANTS))
    max_length: Optional[int] = setting(None, "longest text in tokens (prefix and special tokens included); longer "
                                        "texts are refused before any model runs (a dump must cover every token stage 3 "
                                        "ranks, so nothing is truncated); null = the model's max_position_embeddings",
                                        at_least(2), null="null for the model's own limit")
    device: Optional[str] = setting(None, "device of stage 1 in run_experiment: auto, cpu, cuda or multi (e.g. multi "
                                    "for a 70B dump while an 8B trains on one GPU)", DEVICE,
                                    null="null for the run's device")


@dataclass
class TrainSettings:
    """Stage 4 hyper-parameters (``train.<key>`` in run_experiment)."""

    epochs: float = setting(10.0, "training epochs (the paper searched 10-30, the released code used 20; this "
                            "project's default 10)",
                            Rule(lambda v: 0 < v <= 1000, "must be in (0, 1000] (training epochs)"))
    batch_size: int = setting(8, "texts per process per step (the released code: 8); global batch = batch_size × "
                              "processes × gradient_accumulation_steps", at_least(1))
    gradient_accumulation_steps: int = setting(1, "steps per optimizer update", at_least(1))
    learning_rate: float = setting(5e-4, "peak AdamW learning rate (the released code: 5e-4; the paper searched "
                                   "5e-5 to 1e-3)", above(0))
    warmup_ratio: float = setting(0.1, "fraction of all steps with linear warm-up (the released code: 0.1); unused "
                                  "when warmup_passes is set", within(0, 1, "", open_high=True))
    warmup_passes: Optional[float] = setting(None, "warm-up length in passes over the training data (epochs), e.g. "
                                             "1; unlike warmup_ratio it does not depend on how long the run is, so "
                                             "with lr_schedule=constant the adapter kept after E passes is the one "
                                             "an E-pass run gives", at_least(0), null="null for warmup_ratio")
    lr_schedule: str = setting("linear", "after warm-up: linear (decay to 0 at the last step; the released code) or "
                               "constant (the peak rate to the end, so any kept pass stands for a run of that "
                               "length: the epoch search of save_at_passes)", one_of("linear", "constant"))
    save_at_passes: list[int] = setting([], "keep the adapter after these passes over the training data (epochs; "
                                        "each original is in every pass once, beside its copies), e.g. [4,8,12], in "
                                        "model_dir/pass-<E>/ with its own train_meta.json (loss on the originals, "
                                        "drop statistics); run_experiment evaluates each; [] keeps only the final "
                                        "adapter", Rule(lambda v: all(isinstance(e, int) and not isinstance(e, bool)
                                                                      and e >= 1 for e in v)
                                                        and list(v) == sorted(set(v)),
                                                        "must be increasing whole numbers >= 1, e.g. [4,8,12]"))
    max_grad_norm: float = setting(1.0, "gradient clipping norm, 0 = no clipping (the released code: 1.0)",
                                   at_least(0, " (0 = no clipping)"))
    max_length: int = setting(512, "longest text in tokens (EOS included), as in stage 1: a longer text is refused, "
                              "never cut (a cut text loses its last fields); at most the model's positions",
                              at_least(2, " (at least one token and EOS)"))
    lora_r: int = setting(16, "LoRA rank (the paper: 16)", at_least(1))
    lora_alpha: float = setting(16.0, "LoRA scaling numerator, usually 1-2 × rank (the released code: 16)", above(0))
    lora_dropout: float = setting(0.0, "dropout on the LoRA path (the released code: 0)", within(0, 1, "", open_high=True))
    quant: Optional[str] = setting(None, "null (full precision), 8bit (the released code's setting) or 4bit; "
                                   "bitsandbytes (run here on the CPU only)", one_of(*QUANTS))
    dtype: str = setting("auto", "dtype of the frozen base weights: auto (bf16 on CUDA, fp32 on CPU), float32, "
                         "bfloat16, float16", one_of(*DTYPES))
    logging_steps: int = setting(10, "log the training loss every N steps", at_least(1))
    group_by_length: bool = setting(False, "batch texts of similar length together (less padding, another order)")
    report_to: list[str] = setting(["tensorboard"], "where the Trainer logs: [tensorboard] (model_dir/runs), [] or "
                                   "[none] for nothing, or any integration the Trainer supports that is installed "
                                   "(e.g. [wandb])", REPORT_TO)
    save_total_limit: Optional[int] = setting(None, "keep only the last N checkpoint-* folders",
                                              at_least(1), null="null to keep all")


@dataclass
class EvaluateSettings:
    """Stage 5 settings (``evaluate.<key>`` in run_experiment)."""

    fewshot_data: str = path_setting("data/biography_fewshot.csv", "tagged CSV of real people used as few-shot "
                                 "examples; for Wikipedia eval_data a .json/.jsonl (else held-out paragraphs)")
    prompts: str = path_setting("data/prompts.csv", "CSV field,prompt; each prompt has {name}, e.g. \"Which "
                            "company did {name} work for?\\nAnswer:\" (unused for Wikipedia and mode=completion)")
    shots: Optional[int] = setting(None, "solved examples before each question, never about the person asked "
                                   "(the released code: 5; the paper does not give the number)", at_least(0),
                                   null="null for 5 with mode=qa, 0 with mode=completion")
    max_new_tokens: int = setting(10, "generation budget per answer (the released code: 10)", at_least(1))
    batch_size: int = setting(8, "prompts per generate call (left padding; on the CPU in float32 predictions do "
                              "not depend on it, on GPUs only approximately)", at_least(1))
    max_people: Optional[int] = setting(None, "only the first N people of eval_data (Wikipedia: its first N "
                                        "questions)", at_least(1), null="null for everyone in eval_data")
    dtype: str = setting("auto", "auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16", one_of(*DTYPES))
    quant: Optional[str] = setting(None, "null, 8bit or 4bit (bitsandbytes; evaluate with the quantisation the "
                                   "adapter was trained with, as the released evaluation does)", one_of(*QUANTS))
    shared_shots: bool = setting(False, "the same shots for every question of a field, so their KV cache is "
                                 "computed once per field (faster); false = fresh shots per question, as the "
                                 "released code")
    bootstrap_resamples: int = setting(2000, "resamples of the percentile bootstrap behind the F1 intervals in "
                                       "results.json (exact match: Wilson)", at_least(100))


# --------------------------------------------------------------------------------------------------
# One config per script
# --------------------------------------------------------------------------------------------------


@dataclass
class SaveAttentionConfig(AttentionSettings):
    """``save_attention.py``: the attention each token receives, averaged over heads and layers."""

    model: str = setting(MISSING, "hub id, local model folder, or a .gguf file (de-quantised on load, slow)")
    dataset: str = path_setting("data/biography.csv", "CSV with a text column (tags are stripped before "
                            "tokenising), or a Wikipedia .json/.jsonl")
    save_name: str = output_path(MISSING, "output path without suffix: writes {save_name}.safetensors")
    aggregate: str = setting("received", "received = mean attention a token receives from the queries at or after "
                             "it (this project's reading: the paper does not define the normalisation); sum = the "
                             "total it receives; released = the released code's arithmetic (bf16, rows summed, "
                             "divided by i+1), for a faithful replay of its ranking", one_of(*AGGREGATES))
    layers: Optional[list[int]] = setting(None, "layer indices to average (negative = from the end); the paper "
                                          "averages all layers and heads", LAYERS,
                                          null="null for all layers")
    text_prefix: str = setting("", "string put before each text, stored but never ranked or dropped; the paper "
                               "used \"Text: \" for Llama 3 (no BOS token: the first word becomes an attention sink)")
    device: str = setting("auto", "auto (CUDA if available; under accelerate launch this process's GPU), cpu, "
                          "cuda, or multi (one process, one model over all GPUs)", DEVICE)
    focus: bool = setting(False, "also store the attention row of the token just before each tagged field (for "
                          "analyze_attention.py); needs tags")
    max_texts: Optional[int] = setting(None, "only the first N texts (quick trials)", at_least(1),
                                       null="null for all texts")
    seed: int = setting(0, "seeds torch and numpy (extraction itself is deterministic)", SEED)


@dataclass
class ContrastAttentionConfig:
    """``contrast_attention.py``: large − small, per text and token."""

    attn_dump_large: str = path_setting(MISSING, "save_name of the larger model's dump (with or without .safetensors)")
    attn_dump_small: str = path_setting(MISSING, "save_name of the smaller model's dump (same family and tokenizer)")
    attn_diff: str = output_path(MISSING, "output path without suffix: writes {attn_diff}.safetensors")
    cross_tokenizer: bool = setting(False, "allow two different tokenizers: the scores are projected onto words "
                                    "and contrasted word by word")


@dataclass
class DataAugmentationConfig:
    """``data_augmentation.py``: token-dropout copies, p(r) = alpha·(1 − exp(−beta·r)) by rank r."""

    augment_type: str = setting("attention_diff", "random (each token dropped with probability alpha) | attention "
                                "(ranked by one model's dump) | attention_diff (ranked by a contrast) | shuffled "
                                "(p(r) over a random ranking) | position (rank 0 = the last token): the last two "
                                "are controls", one_of(*AUGMENT_TYPES))
    alpha: float = setting(DEFAULT_ALPHA, "largest drop probability (the paper's tables: 0.6 or 0.7)", ALPHA)
    beta: float = setting(DEFAULT_BETA, "how fast p(r) rises with rank (the paper's tables: 0.005-0.05); unused by "
                          "random", BETA)
    multiply: int = setting(10, "augmented copies per text (the paper: 10)", MULTIPLY)
    attn_weights: Optional[str] = path_setting(None, "the dump that ranks the tokens: {save_name} of save_attention "
                                           "(attention) or contrast_attention (attention_diff)",
                                           null="null for random, shuffled and position")
    model: str = setting(MISSING, "tokenizer source (hub id, folder or .gguf): the trained model's, which must be "
                         "the dump's")
    dataset: str = path_setting("data/biography.csv", "the CSV the dump was computed on (checked by SHA-256)")
    save_name: str = output_path(MISSING, "output path without suffix: writes {save_name}.csv and {save_name}.json")
    keep_original: bool = setting(True, "also write each original text (copy 0), trained on beside its copies "
                                  "(the paper)")
    text_prefix: str = setting("", "prefix used for tokenising when no dump is given (a dump's own prefix wins)")
    released_ties: str = setting("position", "a dump of aggregate=released only (its difference is 0 almost "
                                 "everywhere): how equal scores are ordered. position = the later token first, the "
                                 "same on every machine (this project's choice: numpy's order of an all-zero array on "
                                 "AVX2 and AVX-512 CPUs); numpy = this machine's numpy.argsort, as the released code "
                                 "called it (its tie order depends on numpy's version and the CPU's SIMD level)",
                                 one_of(*RELEASED_TIES))
    seed: int = setting(0, "dropout generator seed: same inputs and seed give a byte-identical CSV", SEED)


@dataclass
class TrainConfig(TrainSettings):
    """``train.py``: LoRA continual pretraining (peft, all linear projections except the LM head)."""

    model: str = setting(MISSING, "base model: hub id, local folder or .gguf")
    dataset: str = path_setting(MISSING, "CSV with a text column (stage 3's output, or a tagged CSV: tags are "
                            "stripped), or a Wikipedia .json/.jsonl (its paragraphs)")
    model_dir: str = output_path(MISSING, "output folder: checkpoint-N per epoch, logs in runs/, the final adapter in "
                             "the folder itself")
    device: str = setting("auto", "auto (CUDA if available; under accelerate launch this process's GPU), cpu, "
                          "cuda, or multi", DEVICE)
    seed: int = setting(0, "LoRA initialisation and data order", SEED)
    resume: bool = setting(False, "continue from the last complete checkpoint-N in model_dir; refused if the data "
                           "or a setting changed (epochs may grow)")


@dataclass
class EvaluateConfig(EvaluateSettings):
    """``evaluate.py``: closed-book QA per field (or the completion probe), greedy, SQuAD EM and F1."""

    model: str = setting(MISSING, "base model: hub id, local folder or .gguf (the one the adapter was trained on)")
    model_dir: Optional[str] = path_setting(None, "LoRA adapter folder from train.py (or a checkpoint-N in it)",
                                        null="null for the base model")
    eval_data: Optional[str] = path_setting(None, "tagged CSV of the people asked about, or a Wikipedia "
                                            ".json/.jsonl", null="null for the people model_dir was trained on (the "
                                            "dataset its train_meta.json names; for stage 3's copies, their "
                                            "originals), logged and recorded in eval_meta.json; refused without such "
                                            "a record")
    output_dir: str = output_path(MISSING, "writes results.json, predictions.jsonl and eval_meta.json here")
    mode: str = setting("qa", "qa = k-shot questions per field (the paper); completion = the person's name and "
                        "the words of their biography's own sentence up to the field (\"Liam Thompson had a "
                        "professional role at\"): what the model memorised", one_of(*MODES))
    device: str = setting("auto", "auto (CUDA if available; under accelerate launch this process's GPU), cpu, "
                          "cuda, or multi", DEVICE)
    seed: int = setting(0, "seed of the few-shot draw and of the bootstrap intervals", SEED)
    every_pass: bool = setting(False, "also evaluate each adapter train.py kept at a pass (save_at_passes: "
                               "model_dir/pass-<E>/) into output_dir/pass-<E>/; the final adapter still goes to "
                               "output_dir")


@dataclass
class MakeBiographiesConfig:
    """``make_biographies.py``: synthetic tagged biographies."""

    n_people: int = setting(300, "number of people, each with a unique full name (max 104,396)", at_least(1))
    seed: int = setting(0, "random seed: same settings give a byte-identical CSV", SEED)
    template: str = setting("paper", "paper = the paper's five fixed sentences; varied = several frames per "
                            "field, picked at random", one_of(*TEMPLATE_MODES))
    field_order: Any = setting("fixed", "fixed (date, city, university, major, company), permuted (random per "
                               "person) or a list, e.g. [company, major, university, city, date]")
    output: str = output_path("data/biography.csv", "the CSV to write (one column text); an existing file is "
                              "replaced only with overwrite=true (one with the very bytes it would get is left as "
                              "it is)")
    overwrite: bool = setting(False, "replace an existing output file (the default output is the committed dataset)")


@dataclass
class AnalyzeAttentionConfig:
    """``analyze_attention.py``: top-k tokens by attention (or difference) before each field (Figures 2-3)."""

    attn_dump: str = path_setting(MISSING, "a focus dump (save_attention focus=true) or the contrast of two")
    output: str = output_path(MISSING, "output path without suffix: writes {output}.csv, .md and .png")
    model: Optional[str] = setting(None, "tokenizer for printing tokens", null="null for the dump's own tokenizer")
    k: int = setting(10, "how many top keys to rank (the paper: 10)", at_least(1))
    include_punctuation: bool = setting(False, "also rank punctuation, whitespace and special tokens (the paper's "
                                        "figures leave them out)")


@dataclass
class PlotAccuracyDistanceConfig:
    """``plot_accuracy_distance.py``: accuracy against the distance from the name (Figure 1)."""

    predictions: Any = setting(MISSING, "evaluate.py's predictions.jsonl or its output_dir, or a list [a,b] to "
                               "pool runs")
    eval_data: str = path_setting("data/biography.csv", "the tagged CSV the predictions were made on")
    model: str = setting(MISSING, "tokenizer that counts the tokens: the model evaluated")
    output: str = output_path(MISSING, "output path without suffix: writes {output}.csv, .png and .md")
    bin_size: int = setting(10, "width of a distance bin in tokens", at_least(1))


@dataclass
class PlotKeepProbabilityConfig:
    """``plot_keep_probability.py``: each token's keep probability 1 − p(r) under one augmentation (Figure 4)."""

    augment_type: str = setting("attention_diff", "as data_augmentation.py", one_of(*AUGMENT_TYPES))
    alpha: float = setting(DEFAULT_ALPHA, "as data_augmentation.py", ALPHA)
    beta: float = setting(DEFAULT_BETA, "as data_augmentation.py", BETA)
    attn_weights: Optional[str] = path_setting(None, "the ranking dump, as data_augmentation.py",
                                           null="null for random, shuffled and position")
    model: str = setting(MISSING, "tokenizer source: the dump's tokenizer")
    dataset: str = path_setting("data/biography.csv", "the CSV the dump was computed on")
    rows: Any = setting([0, 1, 2], "rows of the dataset to show (0-based), e.g. [0,1,2] or 5", ROWS)
    output: str = output_path(MISSING, "output path without suffix: writes {output}.html, .png and .csv")
    seed: int = setting(0, "shuffled only: the data_augmentation seed whose random ranking is shown", SEED)
    text_prefix: str = setting("", "prefix used for tokenising when no dump is given (a dump's own prefix wins)")
    released_ties: str = setting("position", "as data_augmentation.py (a dump of aggregate=released only)",
                                 one_of(*RELEASED_TIES))


@dataclass
class SummarizeConfig:
    """``summarize.py``: results.json files into one table."""

    runs: Any = setting(MISSING, "list of folders (searched for results.json) or results.json files")
    output: Optional[str] = output_path(None, "output path without suffix: writes {output}.md, .csv and _runs.csv",
                                    null="null to print only")


def _runs_ok(value: Any) -> bool:
    """One path, or a non-empty list of paths (``a=``/``b=`` of compare_runs)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return bool(items) and all(isinstance(item, str) and item for item in items)


RUNS = Rule(_runs_ok, "must be an evaluation folder or a list of them, one per training seed, e.g. [s0/eval,s1/eval]")
FIELD_SET = Rule(lambda v: len(v) >= 2 and len(set(v)) == len(v),
                 "must list two or more different fields, e.g. [university,company]")


@dataclass
class CompareRunsConfig:
    """``compare_runs.py``: two arms on the same questions, paired by person and by training seed."""

    a: Any = setting(MISSING, "reference arm: an evaluation folder (or its predictions.jsonl), or a list of them, "
                     "one per training seed, e.g. [s0/eval,s1/eval]", RUNS)
    b: Any = setting(MISSING, "compared arm, as a, paired with a by position (same seeds, same order): differences "
                     "are b − a", RUNS)
    output: str = output_path(MISSING, "output path without suffix: writes {output}.json and {output}.md")
    fields: Optional[list[str]] = setting(None, "one more row pooling these fields, e.g. [university,company] (the "
                                          "far fields; row university+company)", FIELD_SET, null="null for none")
    seed: int = setting(0, "seed of the person bootstrap (and of Monte Carlo sign flips)", SEED)
    resamples: int = setting(2000, "bootstrap resamples (and sign patterns when too many people for the exact "
                             "sign-flip test)", at_least(100))


@dataclass
class AnalyzeSweepConfig:
    """``analyze_sweep.py``: a sweep of run_experiment runs over methods and seeds, analysed at the level of its design."""

    root: str = path_setting(MISSING, "the sweep's folder, {out_root}/{name} (one run per method and seed in it)")
    reference: str = setting("plain", "the arm every other arm is compared with", one_of(*METHODS))
    primary: list[str] = setting([], "arms whose comparison with the reference is the primary family (Holm-adjusted "
                                 "together), e.g. [attention_diff]; the other comparisons get BH q-values, "
                                 "labelled secondary")
    mode: str = setting("qa", "the evaluation whose answers are compared (qa or completion)", one_of(*MODES))
    fields: list[str] = setting(["university", "company"], "the endpoint's fields (the paper's far fields); the "
                                "kept pass of every arm is chosen by its exact match on them, on one fold of "
                                "people, and reported on the other")
    output: str = output_path(MISSING, "output path without suffix: writes {output}.json and {output}.md")
    seed: int = setting(0, "seed of the person bootstrap (and of Monte Carlo sign flips)", SEED)
    resamples: int = setting(10_000, "bootstrap resamples", at_least(100))


@dataclass
class RunExperimentConfig:
    """``run_experiment.py``: one table row end to end, from a preset in conf/experiment/."""

    # config groups: conf/pair/ (a model pair and its precision), conf/recipe/ (a training recipe), then the
    # preset (conf/experiment/), which selects both with `override /pair: ...`; each may be given on the command line
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"pair": None}, {"recipe": None},
                                                         {"experiment": None}])
    name: str = setting("default", "experiment name: everything goes under {out_root}/{name}/", NAME)
    out_root: str = output_path("out/experiments", "root folder of all experiments")
    method: str = setting("attention_diff", "plain | random | attention (the trained model's own attention) | "
                          "attention_diff | shuffled (control: random ranking) | position (control: rank by "
                          "position) | released (attention_diff ranked as the released code ranks)", one_of(*METHODS))
    model: str = setting(MISSING, "the model trained with LoRA and evaluated")
    small_model: Optional[str] = setting(None, "smaller model of the contrast pair (attention_diff, released)")
    large_model: Optional[str] = setting(None, "larger model of the same family (attention_diff, released)")
    dataset: str = path_setting("data/biography.csv", "training texts: tagged CSV or Wikipedia .json/.jsonl")
    eval_data: Optional[str] = path_setting(None, "what to ask about", null="null for the training texts themselves "
                                        "(the paper's setting)")
    n_texts: Optional[int] = setting(None, "only the first N texts of a CSV dataset (the released biography set has "
                                     "100 people)", at_least(1), null="null for all")
    alpha: Optional[float] = setting(None, "largest drop probability", within(0, 1),
                                     null=f"null for the preset's method_params[method].alpha, else {DEFAULT_ALPHA}")
    beta: Optional[float] = setting(None, "rank rate of p(r)", at_least(0),
                                    null=f"null for the preset's method_params[method].beta, else {DEFAULT_BETA}")
    method_params: dict[str, dict[str, float]] = setting({}, "per-method alpha/beta, e.g. {random: {alpha: 0.6}, "
                                                         "attention_diff: {alpha: 0.6, beta: 0.03}}; on the command "
                                                         "line ++method_params.random.alpha=0.6", METHOD_PARAMS)
    multiply: int = setting(10, "augmented copies per text (the paper: 10, trained together with the originals)",
                            MULTIPLY)
    plain_copies: int = setting(0, "method=plain: extra unchanged copies per text (= multiply gives every method "
                                "the same number of steps); 0 = originals only (the paper)", within(0, 1000))
    text_prefix: str = setting("", "prefix for attention extraction (\"Text: \" guards the attention sink of models "
                               "without BOS)")
    layers: Optional[list[int]] = setting(None, "layers averaged for the attention scores", LAYERS,
                                          null="null for all")
    seed: int = setting(0, "seed of augmentation, LoRA initialisation, data order and few-shot sampling", SEED)
    device: str = setting("auto", "auto (CUDA if available), cpu, cuda, or multi (one model over all GPUs)",
                          DEVICE)
    modes: list[str] = setting(["qa"], "evaluations of every run: [qa], [completion] or [qa, completion]",
                               MODE_LIST)
    dry_run: bool = setting(False, "check every input file and setting without loading a model, then exit")
    attention: AttentionSettings = field(default_factory=AttentionSettings, metadata={"help": "stage-1 settings"})
    train: TrainSettings = field(default_factory=TrainSettings, metadata={"help": "stage-4 settings"})
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings, metadata={"help": "stage-5 settings"})


SCHEMAS: dict[str, type] = {
    "save_attention": SaveAttentionConfig,
    "contrast_attention": ContrastAttentionConfig,
    "data_augmentation": DataAugmentationConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "make_biographies": MakeBiographiesConfig,
    "analyze_attention": AnalyzeAttentionConfig,
    "plot_accuracy_distance": PlotAccuracyDistanceConfig,
    "plot_keep_probability": PlotKeepProbabilityConfig,
    "summarize": SummarizeConfig,
    "compare_runs": CompareRunsConfig,
    "analyze_sweep": AnalyzeSweepConfig,
    "run_experiment": RunExperimentConfig,
}
"""The config of each top-level script, by script name."""

RELEASED_NAMES = {"prompt_data": "prompts", "lr": "learning_rate", "max_epochs": "epochs",
                  "max_token_length": "max_length"}
"""Keys of the paper's released code and their names here (named in the unknown-key error)."""


# --------------------------------------------------------------------------------------------------
# Checking a config
# --------------------------------------------------------------------------------------------------


def settings_fields(schema: type) -> list[dataclasses.Field]:
    """The fields of ``schema`` a user sets (Hydra's ``defaults`` list is not one)."""
    return [f for f in dataclasses.fields(schema) if f.name != "defaults"]


def check(cfg: Any, prefix: str = "") -> None:
    """Apply every field's rule to ``cfg`` (a config dataclass), nested groups included.

    Raises:
        InputError: ``key=value: what is wrong; the fix`` for the first field that fails (see :func:`check_field`).
    """
    for f in settings_fields(type(cfg)):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check(value, prefix + f.name + ".")
        else:
            check_field(prefix + f.name, f, value)


def check_field(key: str, f: dataclasses.Field, value: Any) -> None:
    """One setting: a required key must be set, a float must be finite, a non-null value must pass the rule.

    Raises:
        InputError: Naming ``key`` and the value.
    """
    if isinstance(value, str) and value == MISSING:
        raise InputError(f"missing required key(s) {key}; add {key}=<...> to the command line")
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{key}={value}: must be a finite number; give e.g. {key}={_example(f)}")
    rule = f.metadata.get("rule")
    if rule is not None and not rule.test(value):
        null = f.metadata.get("null")
        raise InputError(f"{key}={value}: {rule.text}" + (f", or {null}" if null else ""))


def _example(f: dataclasses.Field) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else None
    return default if default not in (None, MISSING) else 1


def help_text(schema: type, prefix: str = "") -> list[str]:
    """One line per key: ``key (type, default): help``; required keys first, nested groups as ``group.key``."""
    lines = []
    fields = settings_fields(schema)
    for f in sorted(fields, key=lambda f: (f.default is not MISSING, fields.index(f))):
        sub = _nested_schema(f)
        if sub is not None:
            lines.extend(help_text(sub, prefix + f.name + "."))
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = "required" if default == MISSING else _yaml(default)
        null = f.metadata.get("null")
        extra = f"; {null}" if null else ""
        kind = "path" + (" or null" if "Optional" in str(f.type) else "") if f.metadata.get("path") else _type_name(f.type)
        lines.append(f"  {prefix + f.name} ({kind}, default {shown}): {f.metadata.get('help', '')}{extra}")
    return lines


def _nested_schema(f: dataclasses.Field) -> type | None:
    if f.default_factory is not dataclasses.MISSING:
        made = f.default_factory()
        if dataclasses.is_dataclass(made):
            return type(made)
    return None


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "")
    return {"Path": "path", "Optional[Path]": "path or null", "str": "text", "Optional[str]": "text or null",
            "int": "integer", "Optional[int]": "integer or null", "float": "number", "Optional[float]": "number or null",
            "bool": "true/false", "Any": "value"}.get(text, text)


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"' if value == "" or value != value.strip() else value
    return str(value)


def known_keys(schema: type, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every settable key of ``schema``, nested groups as ``group.key``."""
    keys: dict[str, dataclasses.Field] = {}
    for f in settings_fields(schema):
        sub = _nested_schema(f)
        if sub is not None:
            keys.update(known_keys(sub, prefix + f.name + "."))
        keys[prefix + f.name] = f
    return keys
