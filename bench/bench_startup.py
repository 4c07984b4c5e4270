"""Start-up benchmark: whole processes on the paper's workload, ours vs the released method.

The paper augments 100 biographies × 10 copies, which takes a fraction of a second of computing: what a
user waits for is the process, imports and set-up included. Every row here times whole processes
(``subprocess.run``, wall clock), the median of ``--runs`` runs after a first, cold-cache run (reported too)
that fills the caches (numba's compiled loops and the tokenizer record in a fresh ``ELUSIVE_CACHE``):

* baseline: ``bench/baseline_augmentation.py``, the released method as a script (imports transformers,
  loads the tokenizer, tokenises every text and rebuilds each copy token by token);
* ours: ``python data_augmentation.py augment_type=attention_diff ... multiply=10`` with a dump (random
  scores, the metadata stages 1 and 2 write) — ratio ours ÷ baseline, target ≤ 0.5;
* a 9-setting Hydra multirun (``-m alpha=0.5,0.6,0.7 beta=0.01,0.03,0.05``: Hydra's basic sweeper, every job
  checked before the first runs) ÷ one run, measured without a target; for scale the same multirun of a Hydra
  app that does nothing on the same config;
* ``python <script>.py --help`` of every top-level script: within 2 s (it needs no torch).

Equivalence: ours and the baseline keep the same tokens (whitespace ignored), the cold and warm runs of
ours write the same bytes, and the multirun's alpha=0.7, beta=0.05 job writes the single run's bytes.

    python bench/bench_startup.py --model models/qwen2.5-coder-0.5b     # the real tokenizer (what matters)
    python bench/bench_startup.py --tiny --runs 1 --help-scripts data_augmentation
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/ is a folder of scripts, not installed: run as `python bench/<x>.py`, Python puts bench/ first on the path,
# and `bench.common` (shared by every bench) needs the project root. The package itself comes from the install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_augmentation import make_inputs, same_tokens
from bench.common import ROOT, Row, add_model_args, fmt_seconds, report, resolve_model

PROCESS_TARGET = 0.5  # ours ÷ the released method's whole process
ALPHAS, BETAS = (0.5, 0.6, 0.7), (0.01, 0.03, 0.05)
CHECK_IMPORTS = ("import runpy, sys; sys.argv = {argv!r}; runpy.run_path({script!r}, run_name='__main__'); "
                 "print('IMPORTED', sorted(m for m in ('torch', 'transformers', 'numba') if m in sys.modules))")


# import the engine and call each compiled loop once on a tiny input: what numba costs a process
ENGINE_FIRST_CALLS = """
import time
start = time.perf_counter()
import numpy as np
from elusive.augment import engine as e
codes, ts, spans = e.codes_of("abc defgh"), np.array([0, 9]), np.array([[0, 3], [4, 9]])
e.ranks_by_group(np.array([0.5, 0.25], np.float32), np.array([0, 2]))
cand, cs = e.candidates(np.ones(9, bool), ts, np.array([0, 2]), spans, np.ones(2, bool))
rc, rs = e.drop_rows(codes, ts, spans[cand], cs, np.array([1.0, 0.0]), np.zeros(4), np.array([0, 2]), 2, True)
e.csv_lines(e.Rows(rc, rs, np.zeros(3, np.int64), np.arange(3)))
print(time.perf_counter() - start)
"""

# Hydra alone: an app that does nothing, on the same config as data_augmentation.py (its typed config, stored
# under the script's name as elusive.core.cli does)
EMPTY_APP = """import hydra
from hydra.core.config_store import ConfigStore

from elusive.core.config import SCHEMAS

ConfigStore.instance().store(name="data_augmentation", node=SCHEMAS["data_augmentation"])


@hydra.main(version_base="1.3", config_path={conf!r}, config_name="data_augmentation")
def main(cfg) -> None:
    pass


if __name__ == "__main__":
    main()
"""


def top_level_scripts() -> list[str]:
    """The project's top-level scripts (names without ``.py``)."""
    return sorted(p.stem for p in ROOT.glob("*.py"))


def run(cmd: list[str], env: dict[str, str], output: bool = False) -> float | tuple[float, str]:
    """Wall time of the process ``cmd`` (and its standard output if ``output``); raises with its error output
    if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return (seconds, proc.stdout) if output else seconds


def child_env(cache: Path) -> dict[str, str]:
    """The environment of the timed processes: a cache folder of this bench only (empty at first)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(ELUSIVE_CACHE=str(cache), PYTHONPATH=str(ROOT), TQDM_DISABLE="1", HYDRA_FULL_ERROR="1")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, "only its tokenizer is used")
    parser.add_argument("--bios", type=int, default=100, help="biographies (the paper: 100)")
    parser.add_argument("--multiply", type=int, default=10, help="copies per biography (the paper: 10)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each process after the cold one (median)")
    parser.add_argument("--help-scripts", nargs="*", default=None,
                        help="top-level scripts whose --help is timed (default: all; none with an empty list)")
    args = parser.parse_args(argv)
    model = resolve_model(args)
    py = sys.executable
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        folder = Path(tmp)
        os.environ["ELUSIVE_CACHE"] = str(folder / "setup-cache")  # this process's records stay out of the children's
        from elusive.core.models import load_tokenizer

        tokenizer = load_tokenizer(model)
        dataset, dump = make_inputs(tokenizer, args.bios, folder, kind="attention_diff")
        env = child_env(folder / "cache")
        knobs = ["--alpha", "0.7", "--beta", "0.05", "--multiply", str(args.multiply)]
        base_cmd = [py, str(ROOT / "bench" / "baseline_augmentation.py"), "--model", model, "--dataset", str(dataset),
                    "--dump", str(dump), "--out", str(folder / "base"), *knobs]
        common = ["augment_type=attention_diff", f"multiply={args.multiply}", f"attn_weights={dump}", f"model={model}",
                  f"dataset={dataset}"]

        def ours_cmd(name: str) -> list[str]:
            return [py, str(ROOT / "data_augmentation.py"), *common, "alpha=0.7", "beta=0.05",
                    f"save_name={folder / name}", f"hydra.run.dir={folder / 'runs' / name}"]

        def multi_cmd(name: str, *extra: str) -> list[str]:
            return [py, str(ROOT / "data_augmentation.py"), "-m", *common, f"alpha={','.join(map(str, ALPHAS))}",
                    f"beta={','.join(map(str, BETAS))}", f"save_name={folder}/{name}/aug_a${{alpha}}_b${{beta}}",
                    f"hydra.sweep.dir={folder / name / 'sweep'}", *extra]

        # cold: the first process of each kind (ours compiles its loops and loads transformers once)
        base_cold = run(base_cmd, env)
        ours_cold = run(ours_cmd("cold"), env)
        base_times, ours_times, multi_times = [], [], []
        for _ in range(max(1, args.runs)):  # interleaved, so a slow spell of the machine hits both sides
            base_times.append(run(base_cmd, env))
            ours_times.append(run(ours_cmd("ours"), env))
        for _ in range(max(1, args.runs)):
            multi_times.append(run(multi_cmd("multi"), env))
        base, ours, multi = (statistics.median(t) for t in (base_times, ours_times, multi_times))

        def spread(times: list[float]) -> str:
            return f"{fmt_seconds(min(times))}–{fmt_seconds(max(times))}"

        what = f"whole process, {args.bios} bios × {args.multiply} copies (median of {len(ours_times)})"
        rows.append(Row(what, fmt_seconds(base), fmt_seconds(ours), ours / base, PROCESS_TARGET, higher_is_better=False))
        rows.append(Row("first run, empty caches (ours: numba compiles, transformers loads)", fmt_seconds(base_cold),
                        fmt_seconds(ours_cold), ours_cold / base_cold, None, higher_is_better=False))
        settings = len(ALPHAS) * len(BETAS)
        rows.append(Row(f"Hydra multirun of {settings} settings ÷ one run (baseline column: one run)",
                        fmt_seconds(ours), fmt_seconds(multi), multi / ours, None, higher_is_better=False))
        notes.append(f"spread: baseline {spread(base_times)}, ours {spread(ours_times)}, "
                     f"multirun {spread(multi_times)}")

        # what bounds the multirun row: Hydra's own cost per job, with an app that does nothing
        app = folder / "empty_app.py"
        app.write_text(EMPTY_APP.format(conf=str(ROOT / "conf")))
        hydra_keys = ["model=x", "save_name=y"]
        hydra_one = statistics.median(run([py, str(app), *hydra_keys, f"hydra.run.dir={folder / 'h1'}"], env)
                                      for _ in range(max(1, args.runs)))
        hydra_multi = statistics.median(run([py, str(app), "-m", *hydra_keys, f"alpha={','.join(map(str, ALPHAS))}",
                                             f"beta={','.join(map(str, BETAS))}", f"hydra.sweep.dir={folder / 'h9'}"],
                                            env) for _ in range(max(1, args.runs)))
        rows.append(Row("Hydra alone (an app doing nothing, same config, basic sweeper): multirun ÷ one run",
                        fmt_seconds(hydra_one), fmt_seconds(hydra_multi), hydra_multi / hydra_one, None,
                        higher_is_better=False))
        jobs = settings - 1
        notes.append(f"each extra multirun job costs {fmt_seconds((multi - ours) / jobs)}, of which Hydra alone "
                     f"{fmt_seconds((hydra_multi - hydra_one) / jobs)} (the basic sweeper composes every job's config "
                     "twice, to validate the batch and to launch it; the check before the first job composes it "
                     "once more and runs the stage up to its output checks)")

        # numba: compiling the loops (first run) vs loading them from the cache (later runs)
        engine_env = child_env(folder / "engine-cache")
        compiled = float(run([py, "-c", ENGINE_FIRST_CALLS], engine_env, output=True)[1])
        loaded = statistics.median(float(run([py, "-c", ENGINE_FIRST_CALLS], engine_env, output=True)[1])
                                   for _ in range(max(1, args.runs)))
        rows.append(Row("numba loops: import + first calls, compiling (first run) vs from the cache", fmt_seconds(compiled),
                        fmt_seconds(loaded), loaded / compiled, None, higher_is_better=False))

        help_scripts = top_level_scripts() if args.help_scripts is None else args.help_scripts
        for script in help_scripts:
            seconds = run([py, str(ROOT / f"{script}.py"), "--help"], env)
            # ratio = seconds ÷ the 2 s budget (lower is better, target ≤ 1: within 2 s)
            rows.append(Row(f"`python {script}.py --help` (÷ 2 s)", "2 s", fmt_seconds(seconds), seconds / 2.0, 1.0,
                            higher_is_better=False))

        check = subprocess.run([py, "-c", CHECK_IMPORTS.format(argv=ours_cmd("check")[1:], script=str(ROOT / "data_augmentation.py"))],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        imported = next((line for line in check.stdout.splitlines() if line.startswith("IMPORTED")), "IMPORTED ?")
        notes.append(f"ours imported (of torch, transformers, numba): {imported.split(' ', 1)[1]} — none of the first "
                     "two when the tokenizer record vouches for the dump's tokens")
        total, loose, _ = same_tokens(folder / "ours.csv", folder / "base.csv")
        cold_same = (folder / "cold.csv").read_bytes() == (folder / "ours.csv").read_bytes()
        multi_same = (folder / "multi" / "aug_a0.7_b0.05.csv").read_bytes() == (folder / "ours.csv").read_bytes()
        outputs = sorted(p.name for p in (folder / "multi").glob("aug_*.csv"))
        equal = loose == total and cold_same and multi_same and len(outputs) == settings
        notes.append(f"equivalence: {loose}/{total} rows keep the baseline's tokens (whitespace ignored); cold and warm "
                     f"runs {'byte-identical' if cold_same else 'DIFFER'}; multirun job alpha=0.7 beta=0.05 "
                     f"{'byte-identical to' if multi_same else 'DIFFERS from'} the single run; {len(outputs)} of "
                     f"{settings} multirun outputs written → {'PASS' if equal else 'FAIL'}")
        notes.append(f"tokenizer {model}; each timed process starts from scratch (python, imports, Hydra, reading "
                     "the CSV and the dump); the caches are those the cold run filled")
    report("Start-up — stage 3 on the paper's workload, whole processes", rows, notes, args.json)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
