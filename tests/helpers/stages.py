"""The stage functions called the short way in tests: positional paths first, settings as keywords.

Each builds the stage's config dataclass (elusive/core/config.py, the one definition of every setting) and calls
the library function with it, as the top-level scripts do.
"""

from __future__ import annotations

from elusive import experiment
from elusive.attention import contrast
from elusive.attention import stage as attention
from elusive.augment import stage as augment
from elusive.core.config import (
    AnalyzeAttentionConfig,
    ContrastAttentionConfig,
    DataAugmentationConfig,
    EvaluateConfig,
    PlotAccuracyDistanceConfig,
    PlotKeepProbabilityConfig,
    RunExperimentConfig,
    SaveAttentionConfig,
    SummarizeConfig,
    TrainConfig,
)
from elusive.evaluation import stage as evaluation
from elusive.reporting import analysis, figure_distance, figure_keep, summary
from elusive.training import stage as training


def _s(path):
    return None if path is None else str(path)


def save_attention(model, dataset, save_name, **settings):
    return attention.save_attention(SaveAttentionConfig(model=str(model), dataset=_s(dataset), save_name=_s(save_name),
                                                        **settings))


def contrast_attention(large, small, diff, **settings):
    return contrast.contrast_attention(ContrastAttentionConfig(attn_dump_large=_s(large), attn_dump_small=_s(small),
                                                               attn_diff=_s(diff), **settings))


def data_augmentation(augment_type, alpha, beta, multiply, model, dataset, save_name, attn_weights=None, **settings):
    return augment.data_augmentation(DataAugmentationConfig(
        augment_type=augment_type, alpha=alpha, beta=beta, multiply=multiply, model=str(model), dataset=_s(dataset),
        save_name=_s(save_name), attn_weights=_s(attn_weights), **settings))


def train(model, dataset, model_dir, **settings):
    return training.train(TrainConfig(model=str(model), dataset=_s(dataset), model_dir=_s(model_dir), **settings))


def evaluate(model, eval_data, output_dir, **settings):
    for key in ("model_dir", "fewshot_data", "prompts"):
        if key in settings:
            settings[key] = _s(settings[key])
    return evaluation.evaluate(EvaluateConfig(model=str(model), eval_data=_s(eval_data), output_dir=_s(output_dir),
                                              **settings))


def analyze_attention(attn_dump, output, **settings):
    return analysis.analyze_attention(AnalyzeAttentionConfig(attn_dump=_s(attn_dump), output=_s(output), **settings))


def accuracy_distance(predictions, eval_data, model, output, **settings):
    predictions = [_s(p) for p in predictions] if isinstance(predictions, list) else _s(predictions)
    return figure_distance.accuracy_distance(PlotAccuracyDistanceConfig(predictions=predictions, eval_data=_s(eval_data),
                                                                model=str(model), output=_s(output), **settings))


def keep_probability(augment_type, alpha, beta, model, dataset, output, **settings):
    if "attn_weights" in settings:
        settings["attn_weights"] = _s(settings["attn_weights"])
    return figure_keep.keep_probability(PlotKeepProbabilityConfig(augment_type=augment_type, alpha=alpha, beta=beta,
                                                              model=str(model), dataset=_s(dataset), output=_s(output),
                                                              **settings))


def summarize(runs, output=None):
    return summary.summarize(SummarizeConfig(runs=[_s(r) for r in runs], output=_s(output)))


def run_experiment(cfg=None, **settings):
    if cfg is not None:
        return experiment.run_experiment(cfg)
    for key in ("dataset", "eval_data", "out_root"):
        if key in settings:
            settings[key] = _s(settings[key])
    return experiment.run_experiment(RunExperimentConfig(**settings))
