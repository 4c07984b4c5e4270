"""summarize: Wilson intervals for one seed, n and the dataset on every row, and results.json files checked."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers.run import run_in_process
from helpers.stages import summarize

from elusive.core.errors import InputError
from elusive.reporting.stats import wilson_interval
from elusive.reporting.summary import aggregate, collect, to_markdown

BASE = {"name": "study", "model": "m", "alpha": 0.7, "beta": 0.05, "multiply": 10, "method": "attention_diff"}


def run(folder, em: list[float], n: int, seed: int | None = None, data: tuple[str, str] = ("bio.csv", "ab" * 32),
        f1_ci95=None) -> None:
    """An evaluation folder (results.json for city and company, eval_meta.json) with run.json above it."""
    folder.mkdir(parents=True)
    results = {}
    for field, value in zip(("city", "company"), em):
        results[field] = {"exact_match": value, "f1": value, "n": n, "exact_match_ci95": [value, value]}
        if f1_ci95 is not None:
            results[field]["f1_ci95"] = f1_ci95
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "eval_meta.json").write_text(json.dumps({"mode": "qa", "eval_data": f"/somewhere/{data[0]}",
                                                       "eval_data_sha256": data[1]}))
    if seed is not None:
        (folder.parent / "run.json").write_text(json.dumps({**BASE, "seed": seed}))


def test_one_seed_shows_the_wilson_interval_of_exact_match(tmp_path):
    # results.json holds a percentile interval [0, 0] for 0/40; the summary shows Wilson's [0, 8.8]
    run(tmp_path / "s0" / "eval", [0.0, 0.25], n=40, seed=0, f1_ci95=[0.1, 0.4])
    frame = collect([tmp_path])
    city_hi = 100 * wilson_interval(0, 40)[1]
    assert frame.loc[0, "city_em_lo"] == 0.0 and frame.loc[0, "city_em_hi"] == pytest.approx(city_hi)
    assert (frame.loc[0, "company_em_lo"], frame.loc[0, "company_em_hi"]) == tuple(100 * v for v in wilson_interval(10, 40))
    assert (frame.loc[0, "city_f1_lo"], frame.loc[0, "city_f1_hi"]) == (10.0, 40.0)  # F1: the file's interval
    markdown = to_markdown(aggregate(frame)).splitlines()
    assert markdown[0] == ("| name | model | method | alpha | beta | multiply | city EM | city F1 | company EM | "
                           "company F1 | mean EM | mean F1 | seeds | n | dataset |")
    # 10/40 by hand: centre (10 + z²/2)/(40 + z²) = 11.921/43.841 = 0.2719, half-width z/43.841 · sqrt(300/40 + z²/4)
    # = 0.04471 · 2.9087 = 0.1300: [14.2, 40.2] %
    assert (round(frame.loc[0, "company_em_lo"], 1), round(frame.loc[0, "company_em_hi"], 1)) == (14.2, 40.2)
    assert markdown[2] == (f"| study | m | attention_diff | 0.7 | 0.05 | 10 | 0.0 [0, {city_hi:.0f}] | 0.0 [10, 40] | "
                           "25.0 [14, 40] | 25.0 [10, 40] | 12.5 | 12.5 | 1 | 40 | bio.csv#abababab |")


def test_runs_on_other_data_or_other_people_are_never_averaged_as_seeds(tmp_path):
    run(tmp_path / "s0" / "eval", [0.5, 0.25], n=40, seed=0)
    run(tmp_path / "s1" / "eval", [0.75, 0.25], n=40, seed=1)
    run(tmp_path / "s2" / "eval", [1.0, 0.5], n=8, seed=2, data=("bio8.csv", "cd" * 32))
    run(tmp_path / "s3" / "eval", [0.5, 0.5], n=40, seed=3, data=("other.csv", "ef" * 32))
    table = aggregate(collect([tmp_path]))
    assert table["seeds"].tolist() == [2, 1, 1]
    assert table["n"].tolist() == ["40", "8", "40"] and table["dataset"].tolist() == [
        "bio.csv#abababab", "bio8.csv#cdcdcdcd", "other.csv#efefefef"]
    lines = to_markdown(table).splitlines()
    assert lines[2].endswith("| 62.5 ± 12.5 | 62.5 ± 12.5 | 25.0 ± 0.0 | 25.0 ± 0.0 | 43.8 ± 6.2 | 43.8 ± 6.2 | 2 | 40 | "
                             "bio.csv#abababab |")
    assert lines[3].endswith("| 1 | 8 | bio8.csv#cdcdcdcd |") and lines[4].endswith("| 1 | 40 | other.csv#efefefef |")
    assert lines[0].count("| n |") == 1 and lines[0].count("dataset") == 1  # not repeated as a differing setting


def test_results_json_that_evaluate_did_not_write_is_one_error_naming_it(tmp_path, capsys):
    run(tmp_path / "ok" / "eval", [0.5, 0.25], n=4)
    bad = {
        "truncated": ('{"city": {"exact_match": 0.5, "f1"', "is not valid JSON"),
        "list": ("[1, 2]", "holds a JSON list, not an object"),
        "empty": ("{}", "has no fields"),
        "other-tool": ('{"accuracy": 0.5}', "field 'accuracy' needs exact_match, f1 and n"),
        "compare": ('{"city": {"diff_exact_match": 0.5, "ci95": [0, 1]}}', "field 'city' needs exact_match, f1 and n"),
        "no-n": ('{"city": {"exact_match": 0.5, "f1": 0.5}}', "field 'city' needs exact_match, f1 and n"),
        "n-zero": ('{"city": {"exact_match": 0.5, "f1": 0.5, "n": 0}}', "field 'city' n=0 is not a count >= 1"),
        "em-text": ('{"city": {"exact_match": "half", "f1": 0.5, "n": 4}}', "exact_match and f1 must be numbers"),
        "em-nan": ('{"city": {"exact_match": NaN, "f1": 0.5, "n": 4}}', "is not valid JSON"),
        "em-not-k-of-n": ('{"city": {"exact_match": 0.3, "f1": 0.5, "n": 4}}',
                          "exact_match=0.3 is not a count out of n=4"),
    }
    for name, (text, message) in bad.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(text)
        with pytest.raises(InputError, match=rf"^runs={folder}: {folder}/results.json.*{message}"):
            summarize([tmp_path / "ok", folder])
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "results.json").write_text((tmp_path / "ok" / "eval" / "results.json").read_text())
    (tmp_path / "meta" / "eval_meta.json").write_text('{"mode": ')
    with pytest.raises(InputError, match=rf"runs={tmp_path / 'meta'}: {tmp_path}/meta/eval_meta.json is not valid JSON"):
        summarize([tmp_path / "meta"])
    # through the script: one line, exit 2, no traceback, nothing written
    status, stderr = run_in_process("summarize.py", [f"runs=[{tmp_path / 'ok'},{tmp_path / 'truncated'}]",
                                                     f"output={tmp_path / 'table'}", f"hydra.run.dir={tmp_path / 'h'}"],
                                    capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 2 and "Traceback" not in stderr
    assert errors == [f"error: runs={tmp_path / 'truncated'}: {tmp_path}/truncated/results.json is not valid JSON "
                      "(Expecting ':' delimiter: line 1 column 35 (char 34)); give folders of evaluate.py "
                      "runs (or remove that file)"]
    assert not list(tmp_path.glob("table*"))


def test_a_summary_of_good_runs_still_writes_its_files(tmp_path):
    run(tmp_path / "s0" / "eval", [0.5, 0.25], n=4, seed=0)
    markdown = summarize([tmp_path], tmp_path / "out" / "summary")
    assert (tmp_path / "out" / "summary.md").read_text() == markdown + "\n"
    table = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert table["n"].tolist() == [4] and table["dataset"].tolist() == ["bio.csv#abababab"]
    assert table["city_em_hi"].tolist() == [pytest.approx(100 * wilson_interval(2, 4)[1], abs=1e-4)]
