"""Run one table row of the paper end to end (all five stages), from an experiment preset.

    python run_experiment.py experiment=cpu_qwen method=attention_diff
    python run_experiment.py -m experiment=table2_llama3_8b method=plain,random,attention,attention_diff,shuffled seed=0,1,2
"""


import hydra
from omegaconf import DictConfig, OmegaConf

from elusive.cli import require, resolve_path, run, seed_everything
from elusive.evaluation import markdown_table
from elusive.experiment import Experiment, run_experiment


@hydra.main(version_base="1.3", config_path="conf", config_name="run_experiment")
def main(cfg: DictConfig) -> None:
    require(cfg)
    seed_everything(cfg.seed)
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in ("dataset", "eval_data", "out_root"):
        plain[key] = resolve_path(plain[key])
    for group in ("evaluate",):
        for key in ("fewshot_data", "prompts"):
            if key in plain[group]:
                plain[group][key] = resolve_path(plain[group][key])
    plain["train"]["learning_rate"] = float(plain["train"].get("learning_rate", 5e-4))
    exp = Experiment(**{k: v for k, v in plain.items() if k in Experiment.__dataclass_fields__})
    results = run(run_experiment, cfg, exp=exp)
    print(markdown_table(results))


if __name__ == "__main__":
    main()
