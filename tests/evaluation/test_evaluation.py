"""Stage 5: prompts, k-shot questions, batched greedy answers, scores and the evaluate.py script."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers.run import (
    ROOT,  # noqa: E402
    run_script,
)
from helpers.stages import data_augmentation, evaluate, train
from helpers.tiny import save_tiny, train_tokenizer

from elusive.core.config import EvaluateConfig
from elusive.core.errors import InputError
from elusive.core.models import load_tokenizer
from elusive.evaluation import stage as evaluation
from elusive.evaluation.adapters import load_for_eval
from elusive.evaluation.generation import (
    StopAtNewline,
    answer_questions,
    generate_answers,
    generate_with_prefix,
    shared_prefix,
)
from elusive.evaluation.metrics import exact_match, f1_score
from elusive.evaluation.questions import Question, build_questions, load_people, load_prompts, render
from elusive.evaluation.stage import markdown_table, trained_people
from elusive.evaluation.stage import score_fields as summarize
from elusive.reporting.stats import percent, wilson_interval
from elusive.text.tags import parse_tagged

PROMPTS = ROOT / "data" / "prompts.csv"
FEWSHOT = ROOT / "data" / "biography_fewshot.csv"
FIELDS = ["date", "city", "university", "major", "company"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- prompts and people -----------------------------------------------------------------------------------


def test_load_prompts_default_file():
    prompts = load_prompts(PROMPTS)
    assert list(prompts) == FIELDS
    assert prompts["company"] == "Which company did {name} work for?\nAnswer:"


def test_load_prompts_literal_backslash_n_becomes_newline(tmp_path):
    path = _write(tmp_path / "p.csv", 'field,prompt\ncity,"Where was {name} born?\\nAnswer:"\nmajor,{name} studied\n')
    assert "\\n" in path.read_text()  # the file really holds backslash + n
    assert load_prompts(path) == {"city": "Where was {name} born?\nAnswer:", "major": "{name} studied"}


def test_load_prompts_rejects_prompt_without_name(tmp_path):
    path = _write(tmp_path / "p.csv", 'field,prompt\ncity,"Where was {name} born?"\nmajor,"What did he study?"\n')
    with pytest.raises(InputError) as err:
        load_prompts(path)
    message = str(err.value)
    assert message.startswith(f"prompts={path}") and "'major'" in message and "{name}" in message
    assert "\n" not in message


def test_load_prompts_rejects_duplicate_field_and_missing_column(tmp_path):
    dup = _write(tmp_path / "d.csv", "field,prompt\ncity,{name} A\ncity,{name} B\n")
    with pytest.raises(InputError, match=r"^prompts=.*'city'"):
        load_prompts(dup)
    nocol = _write(tmp_path / "n.csv", "field,question\ncity,{name}\n")
    with pytest.raises(InputError, match=r"^prompts=.*prompt"):
        load_prompts(nocol)


def test_load_people_reads_tags(bios):
    people = load_people(bios, "eval_data", FIELDS)
    assert len(people) == 12
    first = parse_tagged(pd.read_csv(bios)["text"][0])[1]
    assert people[0] == {s.field: s.value.strip() for s in first}
    assert all(set(p) >= {"name", *FIELDS} and all(p.values()) for p in people)


def test_load_people_rejects_row_without_needed_tag(tmp_path):
    path = _write(
        tmp_path / "people.csv",
        'text\n"<name>Ann Lee</name> was born in <city>Oslo</city>. She worked for <company>Acme</company>."\n'
        '"<name>Bob Ray</name> was born in <city>Rome</city>."\n',
    )
    assert load_people(path, "eval_data", ["city"])[1] == {"name": "Bob Ray", "city": "Rome"}
    with pytest.raises(InputError) as err:
        load_people(path, "eval_data", ["city", "company"])
    message = str(err.value)
    assert message.startswith(f"eval_data={path}") and "row 1" in message and "<company>" in message
    no_name = _write(tmp_path / "noname.csv", 'text\n"Someone was born in <city>Oslo</city>."\n')
    with pytest.raises(InputError, match=r"^eval_data=.*<name>"):
        load_people(no_name, "eval_data", ["city"])


# --- k-shot questions -------------------------------------------------------------------------------------

TEMPLATE = {"city": "Where was {name} born?\nAnswer:"}
ANN = {"name": "Ann Lee", "city": "Oslo"}
FEW = [ANN, {"name": "Bob Ray", "city": "Rome"}, {"name": "Cy Tan", "city": "Lima"}]


def test_render_replaces_only_name():
    assert render("What is {name}'s {field}?", "Ann") == "What is Ann's {field}?"


def test_two_shot_prompt_format_by_hand():
    (q,) = build_questions([ANN], FEW, TEMPLATE, shots=2, seed=0)
    bob = "Where was Bob Ray born?\nAnswer: Rome"
    cy = "Where was Cy Tan born?\nAnswer: Lima"
    ask = "Where was Ann Lee born?\nAnswer:"
    assert q.prompt in {f"{bob}\n\n{cy}\n\n{ask}", f"{cy}\n\n{bob}\n\n{ask}"}
    assert (q.person, q.field, q.gold, q.prediction) == ("Ann Lee", "city", "Oslo", "")


def test_shots_never_contain_the_person_asked_about():
    for seed in range(20):
        (q,) = build_questions([ANN], FEW, TEMPLATE, shots=2, seed=seed)
        assert q.prompt.count("Ann Lee") == 1 and q.prompt.endswith("Where was Ann Lee born?\nAnswer:")
        assert "Oslo" not in q.prompt
    with pytest.raises(InputError, match="shots"):
        build_questions([ANN], FEW, TEMPLATE, shots=3, seed=0)  # only 2 others to choose from


def test_k_shots_distinct_and_seeded(bios):
    prompts = load_prompts(PROMPTS)
    people = load_people(bios, "eval_data", list(prompts))[:4]
    fewshot = load_people(FEWSHOT, "fewshot_data", list(prompts))
    questions = build_questions(people, fewshot, prompts, shots=5, seed=3)
    assert len(questions) == len(prompts) * len(people)
    assert [(q.field, q.person) for q in questions] == [(f, p["name"]) for f in prompts for p in people]
    by_name = {p["name"]: p for p in fewshot}
    for q in questions:
        parts = q.prompt.split("\n\n")
        assert len(parts) == 6 and len(set(parts)) == 6
        assert parts[-1] == render(prompts[q.field], q.person)
        for part in parts[:-1]:  # each shot is a real few-shot person with their true answer
            name = next(n for n in by_name if render(prompts[q.field], n) in part)
            assert part == f"{render(prompts[q.field], name)} {by_name[name][q.field]}"
            assert name != q.person
    assert build_questions(people, fewshot, prompts, shots=5, seed=3) == questions
    other = build_questions(people, fewshot, prompts, shots=5, seed=4)
    assert [q.prompt for q in other] != [q.prompt for q in questions]
    zero = build_questions(people, [], prompts, shots=0, seed=0)
    assert [q.prompt for q in zero] == [render(prompts[f], p["name"]) for f in prompts for p in people]


# --- scores -----------------------------------------------------------------------------------------------


def test_summarize_and_table():
    qs = [
        Question("A", "city", "", "", exact_match=1.0, f1=1.0),
        Question("B", "city", "", "", exact_match=0.0, f1=0.5),
        Question("C", "city", "", "", exact_match=0.0, f1=0.0),
        Question("A", "date", "", "", exact_match=1.0, f1=1.0),
    ]
    results = summarize(qs)
    assert list(results) == ["city", "date"]
    city, date = results["city"], results["date"]
    assert (city["exact_match"], city["f1"], city["n"]) == (pytest.approx(1 / 3), pytest.approx(0.5), 3)
    assert city["exact_match_ci95"][0] <= 1 / 3 <= city["exact_match_ci95"][1] and city["exact_match_ci95"] != [1 / 3] * 2
    assert city["exact_match_ci95"] == list(wilson_interval(1, 3))  # exact match: Wilson; F1: bootstrap
    assert date == {"exact_match": 1.0, "f1": 1.0, "n": 1, "exact_match_ci95": list(wilson_interval(1, 1)),
                    "f1_ci95": [1.0, 1.0]}
    table = markdown_table(results).splitlines()
    assert table[0] == "| field | exact match [95% CI] | F1 [95% CI] | n |"
    low = percent(wilson_interval(1, 1)[0])
    assert table[2].startswith("| city | 33.3 [") and table[3] == f"| date | 100.0 [{low}, 100.0] | 100.0 [100.0, 100.0] | 1 |"
    assert table[4] == "| mean | 66.7 | 75.0 | |"  # the mean over fields (no interval without the questions)


# --- generation -------------------------------------------------------------------------------------------


def test_stop_at_newline_is_per_sequence(small_model):
    tok = load_tokenizer(str(small_model))
    prompt = tok("Where?\nAnswer:", add_special_tokens=False)["input_ids"]  # the prompt itself has a newline
    paris = tok(" Paris", add_special_tokens=False)["input_ids"]
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    rows = [prompt + paris + newline, prompt + paris + [tok.eos_token_id] * len(newline), prompt + newline + paris]
    ids = torch.tensor(rows)
    stop = StopAtNewline(tok, prompt_length=len(prompt))
    result = stop(ids, scores=None)
    assert result.dtype == torch.bool and result.tolist() == [True, False, True]
    assert StopAtNewline(tok, prompt_length=ids.shape[1])(ids, None).tolist() == [False, False, False]
    assert StopAtNewline(tok, prompt_length=0)(ids, None).tolist() == [True, True, True]


class _FakeLM(torch.nn.Module):
    """Answers every prompt with " <number of attended tokens>\\nnoise", checking left padding on the way."""

    def __init__(self, tokenizer):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tok = tokenizer
        self.calls = []

    def generate(self, input_ids, attention_mask, generation_config, stopping_criteria):
        self.calls.append((input_ids.shape, generation_config, stopping_criteria))
        pad = self.tok.pad_token_id
        for row, mask in zip(input_ids, attention_mask):
            n = int(mask.sum())
            assert mask[-n:].all() and not mask[:-n].any()  # left padding
            assert (row[:-n] == pad).all()
        conts = [self.tok(f" {int(m.sum())}\nLondon is", add_special_tokens=False)["input_ids"] for m in attention_mask]
        width = max(map(len, conts))
        extra = torch.tensor([c + [pad] * (width - len(c)) for c in conts])
        return torch.cat([input_ids, extra], dim=1)


def test_generate_answers_cuts_at_newline_and_keeps_order(small_model):
    tok = load_tokenizer(str(small_model), padding_side="left")
    prompts = ["Where was Ann born?\nAnswer:", "Q:", "Which company did Bob Ray work for?\nAnswer:", "Who?", "A B C D E F G H"]
    lengths = [len(tok(p)["input_ids"]) for p in prompts]
    assert len(set(lengths)) == len(prompts)
    fake = _FakeLM(tok)
    answers = generate_answers(fake, tok, prompts, max_new_tokens=7, batch_size=2)
    assert answers == [str(n) for n in lengths]  # stripped, cut at "\n", in prompt order
    assert len(fake.calls) == 3
    shape, config, criteria = fake.calls[0]
    assert config.max_new_tokens == 7 and config.do_sample is False and config.num_beams == 1
    assert config.pad_token_id == tok.pad_token_id and config.eos_token_id == tok.eos_token_id
    (stop,) = list(criteria)
    assert isinstance(stop, StopAtNewline) and stop.prompt_length == shape[1]


def test_eval_tokenizer_left_pads_after_bos(gemma_model):
    _, tok = load_for_eval(str(gemma_model), None, "cpu", "auto", None)
    assert tok.padding_side == "left" and tok.bos_token_id is not None
    enc = tok(["Where was Ann Lee born?\nAnswer:", "Who?"], padding=True, return_tensors="pt")
    long, short = enc["input_ids"], enc["attention_mask"]
    assert short[0].all()
    n = int(short[1].sum())
    assert 0 < n < long.shape[1]
    assert (long[1, :-n] == tok.pad_token_id).all() and not short[1, :-n].any() and short[1, -n:].all()
    assert long[0, 0] == tok.bos_token_id and long[1, -n] == tok.bos_token_id


@pytest.fixture(scope="module")
def ten_prompts(bios):
    prompts = load_prompts(PROMPTS)
    people = load_people(bios, "eval_data", list(prompts))[:2]
    fewshot = load_people(FEWSHOT, "fewshot_data", list(prompts))
    return [q.prompt for q in build_questions(people, fewshot, prompts, shots=5, seed=0)]


@pytest.mark.parametrize("model", ["small_model", "gemma_model"])
def test_predictions_do_not_depend_on_batch_size(model, request, ten_prompts):
    lm, tok = load_for_eval(str(request.getfixturevalue(model)), None, "cpu", "auto", None)
    assert len(ten_prompts) == 10
    assert len({len(ids) for ids in tok(ten_prompts)["input_ids"]}) > 1  # batches really are padded
    one = generate_answers(lm, tok, ten_prompts, max_new_tokens=10, batch_size=1)
    eight = generate_answers(lm, tok, ten_prompts, max_new_tokens=10, batch_size=8)
    assert one == eight
    assert all("\n" not in a and a == a.strip() for a in one)
    assert sum(bool(a) for a in one) >= 5  # a random model still writes something


# --- evaluate.py ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_run(small_model, bios, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    out = tmp / "out"
    proc = run_script(
        "evaluate.py", f"model={small_model}", "model_dir=null", f"eval_data={bios}", f"output_dir={out}",
        "max_people=3", hydra_dir=tmp / "hydra",
    )
    return proc, out


def test_evaluate_script_writes_results(eval_run, bios):
    proc, out = eval_run
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert list(results) == FIELDS
    for r in results.values():
        assert set(r) == {"exact_match", "f1", "n", "exact_match_ci95", "f1_ci95"} and r["n"] == 3
        assert 0.0 <= r["exact_match"] <= r["f1"] <= 1.0
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 15
    rows = [json.loads(line) for line in lines]
    templates = load_prompts(PROMPTS)
    names = [p["name"] for p in load_people(bios, "eval_data", FIELDS)[:3]]
    assert {(r["person"], r["field"]) for r in rows} == {(n, f) for n in names for f in FIELDS}
    for r in rows:
        assert {"person", "field", "prompt", "gold", "prediction"} <= set(r)
        assert "\n" not in r["prediction"]
        assert r["prompt"].split("\n\n")[-1] == render(templates[r["field"]], r["person"])
        assert r["prompt"].count("\n\n") == 5  # the default 5 shots
        assert r["exact_match"] == exact_match(r["prediction"], r["gold"])
        assert r["f1"] == pytest.approx(f1_score(r["prediction"], r["gold"]))
    for field, r in results.items():
        mine = [row for row in rows if row["field"] == field]
        assert r["f1"] == pytest.approx(sum(x["f1"] for x in mine) / len(mine))
    assert "| field | exact match [95% CI] | F1 [95% CI] | n |" in proc.stdout
    for field in FIELDS:
        assert f"| {field} | " in proc.stdout
    assert "| mean | " in proc.stdout


def test_same_seed_gives_byte_identical_predictions(small_model, bios, tmp_path):
    args = dict(model=str(small_model), eval_data=bios, fewshot_data=FEWSHOT, prompts=PROMPTS, shots=2,
                max_new_tokens=4, max_people=2, device="cpu")
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        evaluate(output_dir=tmp_path / name, seed=seed, **args)
    for name in ("predictions.jsonl", "results.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    meta = [json.loads((tmp_path / run / "eval_meta.json").read_text()) for run in ("a", "b")]
    assert meta[0].pop("wall_time_s") >= 0 and meta[1].pop("wall_time_s") >= 0  # the only record that differs
    assert meta[0] == meta[1]
    prompts = [[json.loads(line)["prompt"] for line in (tmp_path / run / "predictions.jsonl").read_text().splitlines()]
               for run in ("a", "c")]
    assert len(prompts[0]) == 10 and prompts[0] != prompts[1]  # another seed draws other shots


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_evaluate_script_rejects_prompt_without_name(small_model, bios, tmp_path):
    prompts = _write(tmp_path / "prompts.csv", 'field,prompt\ncity,"Where was he born?\\nAnswer:"\n')
    out = tmp_path / "out"
    proc = run_script(
        "evaluate.py", f"model={small_model}", f"eval_data={bios}", f"output_dir={out}", f"prompts={prompts}",
        hydra_dir=tmp_path / "hydra",
    )
    assert proc.returncode == 2
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith(f"error: prompts={prompts}:")
    assert "Traceback" not in proc.stderr
    assert not (out / "results.json").exists() and not (out / "predictions.jsonl").exists()


def test_evaluate_script_rejects_model_dir_without_adapter(small_model, bios, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    proc = run_script(
        "evaluate.py", f"model={small_model}", f"model_dir={empty}", f"eval_data={bios}", f"output_dir={out}",
        "max_people=1", hydra_dir=tmp_path / "hydra",
    )
    assert proc.returncode == 2
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith(f"error: model_dir={empty}")
    assert "Traceback" not in proc.stderr
    assert not (out / "results.json").exists()


# --- shared shots and the reused KV cache of their prefix ---------------------------------------------------


def test_shared_shots_are_one_set_per_field_without_any_asked_person(bios):
    prompts = load_prompts(PROMPTS)
    people = load_people(bios, "eval_data", list(prompts))[:4]
    fewshot = load_people(FEWSHOT, "fewshot_data", list(prompts))
    fewshot.append(dict(people[0]))  # an asked person in the shot pool must never be a shot
    questions = build_questions(people, fewshot, prompts, shots=3, seed=0, shared=True)
    for field in FIELDS:
        group = [q.prompt for q in questions if q.field == field]
        prefix = shared_prefix(group)
        assert prefix.count("\n\n") == 3 and all(p.startswith(prefix) for p in group)
        assert people[0]["name"] not in prefix
        assert [p[len(prefix):] for p in group] == [render(prompts[field], person["name"]) for person in people]


@pytest.mark.parametrize("model", ["small_model", "gemma_model", "word_model"])
def test_reused_prefix_cache_gives_the_same_answers_as_full_prompts(model, request, bios):
    lm, tok = load_for_eval(str(request.getfixturevalue(model)), None, "cpu", "auto", None)
    prompts = load_prompts(PROMPTS)
    people = load_people(bios, "eval_data", list(prompts))[:6]
    fewshot = load_people(FEWSHOT, "fewshot_data", list(prompts))
    questions = build_questions(people, fewshot, prompts, shots=3, seed=1, shared=True)
    group = [q.prompt for q in questions if q.field == "company"]
    prefix = shared_prefix(group)
    cached = generate_with_prefix(lm, tok, prefix, [p[len(prefix):] for p in group], 10, 4)
    assert cached is not None  # these tokenizers keep the shots' tokens whole (the fallback: the test below)
    assert cached == generate_answers(lm, tok, group, max_new_tokens=10, batch_size=4)
    assert answer_questions(lm, tok, questions, 10, 4, shared=True) == generate_answers(lm, tok, [q.prompt for q in questions], 10, 4)


def test_a_tokenizer_that_merges_across_the_shots_falls_back_to_full_prompts(corpus_texts, bios, tmp_path, caplog):
    """A byte-level BPE that learned "\\n\\n" as one token (GPT-2's split keeps it whole only at the end of a text)
    tokenises the shots alone with it and the shots + question without it: the KV cache of the shots would be
    another text's, so generate_with_prefix declines and answer_questions answers the full prompts, with a warning
    per field; the answers are those of shared_shots=false."""
    tok = train_tokenizer("bpe", corpus_texts + ["Answer: Paris\n\n"] * 200)
    assert len(tok("x\n\n")["input_ids"]) == 2 and len(tok("x\n\ny")["input_ids"]) == 4
    lm, tok = load_for_eval(str(save_tiny(tmp_path / "merging", "llama", tok, seed=5)), None, "cpu", "auto", None)
    prompts = load_prompts(PROMPTS)
    people = load_people(bios, "eval_data", list(prompts))[:5]
    fewshot = load_people(FEWSHOT, "fewshot_data", list(prompts))
    questions = build_questions(people, fewshot, prompts, shots=2, seed=1, shared=True)
    for field in FIELDS:
        group = [q.prompt for q in questions if q.field == field]
        prefix = shared_prefix(group)
        assert prefix.endswith("\n\n") and generate_with_prefix(lm, tok, prefix, [p[len(prefix):] for p in group], 6, 4) is None
    with caplog.at_level("WARNING", logger="elusive.evaluation.generation"):
        shared = answer_questions(lm, tok, questions, 6, 4, shared=True)
    fell_back = [r.getMessage() for r in caplog.records if "merges across the shots/question boundary" in r.getMessage()]
    assert len(fell_back) == len(FIELDS)
    assert shared == answer_questions(lm, tok, questions, 6, 4, shared=False)
    assert len(shared) == len(questions) and any(shared)  # answers to compare, not all empty


def test_shared_prefix_is_cut_at_a_blank_line():
    assert shared_prefix(["A 1\n\nB 2\n\nQ x", "A 1\n\nB 2\n\nQ y"]) == "A 1\n\nB 2\n\n"
    assert shared_prefix(["Q x", "Q y"]) == ""


def test_shared_shots_are_refused_for_wikipedia_questions(small_model, tmp_path):
    with pytest.raises(InputError, match="shared_shots=true"):
        evaluate(str(small_model), ROOT / "data" / "wiki_sample.jsonl", tmp_path / "out", shared_shots=True)
    assert not (tmp_path / "out").exists()


# --- eval_data=null: the people the adapter was trained on -----------------------------------------------


@pytest.fixture(scope="module")
def trained(small_model, bios, tmp_path_factory):
    """Four people; an adapter trained on them directly (plain) and one trained on stage 3's copies of them."""
    tmp = tmp_path_factory.mktemp("trained")
    people = tmp / "people.csv"
    pd.read_csv(bios).head(4).to_csv(people, index=False)
    settings = dict(epochs=1, batch_size=8, device="cpu", report_to=[])
    train(small_model, people, tmp / "plain", **settings)
    copies = data_augmentation("random", 0.3, 0.05, 1, small_model, people, tmp / "aug")
    train(small_model, copies, tmp / "augmented", **settings)
    return {"people": people, "copies": copies, "plain": tmp / "plain", "augmented": tmp / "augmented"}


def _config(model, model_dir, out, **settings):
    return EvaluateConfig(model=str(model), model_dir=None if model_dir is None else str(model_dir), output_dir=str(out),
                          eval_data=None, **settings)


def test_without_eval_data_an_adapter_is_asked_about_the_people_it_was_trained_on(trained, small_model, tmp_path):
    """Trained on the people's CSV: that CSV; on stage 3's copies: the originals' CSV its augmentation record names,
    never the copies; a checkpoint-N: the data of the train_meta.json beside it (same SHA-256)."""
    people = str(trained["people"])
    for model_dir, source in ((trained["plain"], "the dataset its train_meta.json names"),
                              (trained["augmented"], f"the originals of {trained['copies']}, named by the "
                                                     "augmentation record"),
                              (trained["augmented"] / "checkpoint-1", "the originals of")):
        cfg, found = trained_people(_config(small_model, model_dir, tmp_path / "out"))
        assert cfg.eval_data == people and found.startswith(f"{model_dir}: {source}"), found
    given = _config(small_model, trained["plain"], tmp_path / "out")
    given.eval_data = str(FEWSHOT)
    assert trained_people(given) == (given, None)  # a given eval_data is used as it is


def test_evaluate_without_eval_data_logs_and_records_the_file_and_scores_as_if_given(trained, small_model, tmp_path):
    common = ("max_people=2", "shots=1", "max_new_tokens=2", "device=cpu")
    proc = run_script("evaluate.py", f"model={small_model}", f"model_dir={trained['augmented']}",
                      f"output_dir={tmp_path / 'taken'}", *common, hydra_dir=tmp_path / "h1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"eval_data=null: asking about the people model_dir={trained['augmented']} was trained on: " \
           f"{trained['people']} (the originals of {trained['copies']}" in proc.stdout + proc.stderr
    meta = json.loads((tmp_path / "taken" / "eval_meta.json").read_text())
    assert meta["eval_data"] == str(trained["people"])
    assert meta["eval_data_sha256"] == hashlib.sha256(trained["people"].read_bytes()).hexdigest()
    assert meta["eval_data_from"].startswith(f"{trained['augmented']}: the originals of {trained['copies']}")
    proc = run_script("evaluate.py", f"model={small_model}", f"model_dir={trained['augmented']}",
                      f"eval_data={trained['people']}", f"output_dir={tmp_path / 'given'}", *common,
                      hydra_dir=tmp_path / "h2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "given" / "eval_meta.json").read_text())["eval_data_from"] is None
    for name in ("predictions.jsonl", "results.json"):  # the same evaluation
        assert (tmp_path / "taken" / name).read_bytes() == (tmp_path / "given" / name).read_bytes()
    names = [p["name"] for p in load_people(trained["people"], "eval_data", FIELDS)[:2]]
    assert {json.loads(line)["person"] for line in (tmp_path / "taken" / "predictions.jsonl").read_text().splitlines()} \
        == set(names)


def _copy_adapter(source, target, edit=None):
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoint-*", "runs"))
    if edit is not None:
        meta = json.loads((target / "train_meta.json").read_text())
        edit(meta)
        (target / "train_meta.json").write_text(json.dumps(meta))
    return target


def test_without_eval_data_and_no_record_of_the_people_evaluate_refuses(trained, small_model, tmp_path):
    fix = "give eval_data=<tagged CSV of the people to ask about, or a Wikipedia .json/.jsonl>"
    no_record = _copy_adapter(trained["plain"], tmp_path / "no_record")
    (no_record / "train_meta.json").unlink()
    copies_only = _copy_adapter(trained["augmented"], tmp_path / "copies_only",  # trained while aug.json was missing
                                lambda meta: meta.update(augmentation=None))
    changed = tmp_path / "changed.csv"
    changed.write_text(trained["people"].read_text().replace("Ignacio", "Ignatius"))
    moved = _copy_adapter(trained["plain"], tmp_path / "moved", lambda meta: meta.update(dataset=str(changed)))
    for model_dir, message in (
        (None, "eval_data=null: model_dir=null has no training record to take the people from; "),
        (no_record, f"eval_data=null: model_dir={no_record} has no train_meta.json naming the data it was trained on; "),
        (copies_only, f"eval_data=null: model_dir={copies_only} was trained on {trained['copies']}, stage 3's copies, "
                      "and its train_meta.json does not name their originals; "),
        (moved, f"eval_data=null: model_dir={moved} was trained on the people of {changed}, which has changed since "
                "(another SHA-256); "),
    ):
        out = tmp_path / "out"
        with pytest.raises(InputError) as err:
            evaluation.evaluate(_config(small_model, model_dir, out, device="cpu"))
        assert str(err.value) == message + fix and "\n" not in str(err.value)
        assert not out.exists()  # refused before anything was written
    proc = run_script("evaluate.py", f"model={small_model}", f"output_dir={tmp_path / 'base'}", hydra_dir=tmp_path / "h")
    assert proc.returncode == 2 and not (tmp_path / "base").exists()
    assert _error_lines(proc.stderr) == [f"error: eval_data=null: model_dir=null has no training record to take the "
                                         f"people from; {fix}"]
