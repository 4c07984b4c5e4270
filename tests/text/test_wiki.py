"""Wikipedia paragraphs with questions (Table 3): both file forms, stages 1-4 on paragraphs, closed-book QA."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers.run import ROOT, run_script
from helpers.stages import data_augmentation, evaluate, run_experiment, save_attention, train

from elusive.attention.dump import AttentionDump
from elusive.core.config import RunExperimentConfig
from elusive.core.errors import InputError
from elusive.core.provenance import record_path
from elusive.evaluation import generation
from elusive.evaluation.metrics import exact_match, f1_score
from elusive.evaluation.questions import build_wiki_questions, wiki_prompt
from elusive.experiment import training_data
from elusive.text.data import load_tagged, load_texts
from elusive.text.wiki import WikiQuestion, load_contexts, load_questions, load_wiki

NESTED = ROOT / "data" / "wiki_sample.json"
ROWS = ROOT / "data" / "wiki_sample.jsonl"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


# --- the two forms ----------------------------------------------------------------------------------------


def test_both_forms_load_the_same_contexts_and_questions():
    contexts, questions = load_wiki(NESTED)
    assert (contexts, questions) == load_wiki(ROWS)
    assert load_contexts(ROWS) == contexts and load_questions(NESTED) == questions
    assert len(contexts) == 10 and len(set(contexts)) == 10 and 2 * 10 <= len(questions) <= 4 * 10
    assert contexts[0].startswith("The International Standard Book Number")
    first = questions[0]
    assert (first.question, first.answers, first.context, first.id) == ("How many digits does it have since 2007?", ["13"], 0, "isbn-1")
    for q in questions:  # every gold answer is a span of its paragraph
        assert q.answers and all(a in contexts[q.context] for a in q.answers)
    nested = json.loads(NESTED.read_text(encoding="utf-8"))
    for article in nested["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                for a in qa["answers"]:
                    assert paragraph["context"][a["answer_start"]:].startswith(a["text"])
    # stages 1-4 read the paragraphs, untagged
    assert load_texts(NESTED) == load_texts(ROWS) == contexts
    assert load_tagged(ROWS) == [(c, []) for c in contexts]


def test_answer_forms_and_default_ids(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [
        {"context": "A is 1.", "question": "What is A?", "answers": ["1", " one "]},
        {"context": "B is 2.", "question": "What is B?", "answers": [{"text": "2", "answer_start": 5}]},
        {"context": "A is 1.", "question": "Is A one?", "answers": {"text": ["1", "1"], "answer_start": [5, 5]}},
    ])
    contexts, questions = load_wiki(path, "eval_data")
    assert contexts == ["A is 1.", "B is 2."]
    assert questions == [
        WikiQuestion("What is A?", ["1", "one"], 0, "0-0"),
        WikiQuestion("What is B?", ["2"], 1, "1-0"),
        WikiQuestion("Is A one?", ["1"], 0, "0-1"),
    ]
    nested = _write(tmp_path / "n.json", json.dumps({"data": [{"paragraphs": [
        {"context": "A is 1.", "qas": [{"question": "What is A?", "answers": [{"text": "1"}, {"text": "one"}]},
                                       {"question": "Is A one?", "answers": [{"text": "1"}]}]},
        {"context": "B is 2.", "qas": [{"question": "What is B?", "answers": [{"text": "2"}]}]},
        {"context": "C has no questions."},
    ]}]}))
    contexts, questions = load_wiki(nested)
    assert contexts[-1] == "C has no questions." and [q.id for q in questions] == ["0-0", "0-1", "1-0"]
    odd = {"context": "Line\u2028separator inside.", "question": "Which?", "answers": ["separator"]}
    raw = _write(tmp_path / "odd.jsonl", json.dumps(odd, ensure_ascii=False) + "\r\n")  # U+2028 is not a line break
    assert load_contexts(raw) == [odd["context"]]


def test_wiki_shots_need_wiki_eval_data(bios, tmp_path):
    with pytest.raises(InputError, match=r"^fewshot_data=.*give a tagged CSV"):
        evaluate("unused", bios, tmp_path / "out", fewshot_data=ROWS)
    assert not (tmp_path / "out").exists()


BAD = [
    ("bad.json", '{"data": [', "not JSON"),
    ("bad.json", '{"version": 1}', '"data"'),
    ("bad.json", '{"data": [{"title": "T"}]}', '"paragraphs"'),
    ("bad.json", '{"data": [{"paragraphs": [{"qas": []}]}]}', '"context"'),
    ("bad.json", '{"data": [{"paragraphs": [{"context": "x", "qas": [{"answers": ["x"]}]}]}]}', '"question"'),
    ("bad.json", '{"data": [{"paragraphs": [{"context": "x", "qas": [{"question": "q?"}]}]}]}', '"answers"'),
    ("bad.json", '{"data": [{"paragraphs": [{"context": "x", "qas": [{"question": "q?", "answers": [{"text": " "}]}]}]}]}',
     "no answer text"),
    ("bad.jsonl", '{"context": "x", "question": "q?", "answers": ["x"]}\n["not", "an", "object"]\n', "line 2 is not a JSON object"),
    ("bad.jsonl", '{"context": "x", "question": "q?", "answers": ["x"]}\n\n{"context": "x",\n', "line 3 is not JSON"),
    ("bad.jsonl", '{"context": "x", "question": "q?", "answers": []}\n', "line 1 has no answer text"),
    ("bad.jsonl", '{"question": "q?", "answers": ["x"]}\n', 'line 1 has no "context"'),
    ("bad.jsonl", '{"context": "x", "answers": ["x"]}\n', 'line 1 has no "question"'),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD)
def test_malformed_files_name_the_key_and_the_problem(tmp_path, name, text, expected):
    path = _write(tmp_path / name, text)
    with pytest.raises(InputError) as err:
        load_questions(path, "eval_data")
    message = str(err.value)
    assert message.startswith(f"eval_data={path}: ") and expected in message and "\n" not in message
    with pytest.raises(InputError, match=r"^dataset="):
        load_texts(path)  # the stages 1-4 reader names its own key


# --- stages 1-4 on the paragraphs -------------------------------------------------------------------------


def test_attention_augmentation_and_training_on_the_json(small_model, tmp_path):
    contexts = load_contexts(NESTED)
    attn = save_attention(str(small_model), NESTED, tmp_path / "attn")
    dump = AttentionDump.load(attn)
    assert dump.n_texts == len(contexts) and dump.metadata["fields"] == "[]"
    assert (dump.extra["token_field"] == -1).all()
    aug = data_augmentation("attention", 0.7, 0.05, 2, str(small_model), NESTED, tmp_path / "aug", attn, seed=0)
    frame = pd.read_csv(aug, keep_default_na=False)
    assert len(frame) == 3 * len(contexts) and frame[frame["copy"] == 0]["text"].tolist() == contexts
    lora = train(str(small_model), aug, tmp_path / "lora", epochs=1, batch_size=8, device="cpu")
    assert (lora / "adapter_config.json").is_file()
    assert json.loads((lora / "train_meta.json").read_text())["n_texts"] == 3 * len(contexts)


# --- closed-book QA ---------------------------------------------------------------------------------------


def test_prompt_format_and_shots_never_from_the_asked_paragraph():
    contexts, questions = load_wiki(ROWS)
    assert wiki_prompt("Q2?", [("Q1?", "a1")]) == "Question: Q1?\nAnswer: a1\n\nQuestion: Q2?\nAnswer:"
    for seed in range(5):
        built = build_wiki_questions(questions, contexts, questions, contexts, shots=5, seed=seed)
        for q, asked in zip(built, questions):
            assert (q.person, q.field, q.gold) == (asked.id, "qa", asked.answers)
            shots = [p for p in questions if f"Question: {p.question}\nAnswer: {p.answers[0]}\n\n" in q.prompt]
            assert len(shots) == 5 and all(p.context != asked.context for p in shots)
    again = build_wiki_questions(questions, contexts, questions, contexts, shots=5, seed=0)
    assert again == build_wiki_questions(questions, contexts, questions, contexts, shots=5, seed=0)
    assert again != build_wiki_questions(questions, contexts, questions, contexts, shots=5, seed=1)
    # a separate pool that shares a paragraph (by text) with the asked question never gives that paragraph's shots
    pool_contexts = [contexts[0], "Another paragraph."]
    pool = [WikiQuestion("Same paragraph?", ["13"], 0, "p0"), WikiQuestion("Other?", ["x"], 1, "p1")]
    for seed in range(5):
        (q,) = build_wiki_questions(questions[:1], contexts, pool, pool_contexts, shots=1, seed=seed)
        assert "Same paragraph?" not in q.prompt and "Question: Other?\nAnswer: x\n\n" in q.prompt
    with pytest.raises(InputError, match="only 1 questions about other paragraphs for 2 shots"):
        build_wiki_questions(questions[:1], contexts, pool, pool_contexts, shots=2, seed=0)


def test_em_and_f1_against_any_gold_answer_by_hand(small_model, tmp_path, monkeypatch):
    data = _jsonl(tmp_path / "qa.jsonl", [
        {"id": "tower", "context": "The tower is about 330 metres tall.", "question": "How tall is it?",
         "answers": ["about 330 metres", "330 metres"]},
        {"id": "river", "context": "The Volga is longer.", "question": "Which river is longer?", "answers": [{"text": "the Volga"}]},
        {"id": "sea", "context": "It flows to the Black Sea.", "question": "Where does it flow?",
         "answers": {"text": ["the Black Sea"], "answer_start": [13]}},
    ])
    said = {"How tall is it?": "about 330 m", "Which river is longer?": "Volga", "Where does it flow?": "nowhere"}
    seen = []

    def fake(lm, tok, prompts, max_new_tokens, batch_size, part=None):
        seen.extend(prompts)
        return [said[p.rsplit("Question: ", 1)[1].removesuffix("\nAnswer:")] for p in prompts]

    monkeypatch.setattr(generation, "generate_answers", fake)
    results = evaluate(str(small_model), data, tmp_path / "out", shots=2, device="cpu")
    # tower: best gold "about 330 metres": 2 of 3 tokens shared, F1 2/3 ("330 metres" gives only 0.4); river: EM 1
    assert exact_match("about 330 m", ["about 330 metres", "330 metres"]) == 0.0
    assert f1_score("about 330 m", ["about 330 metres", "330 metres"]) == pytest.approx(2 / 3)
    qa = {k: v for k, v in results["qa"].items() if not k.endswith("_ci95")}
    assert qa == {"exact_match": pytest.approx(1 / 3), "f1": pytest.approx((2 / 3 + 1 + 0) / 3), "n": 3}
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [(r["person"], r["field"], r["gold"], r["prediction"], r["exact_match"]) for r in rows] == [
        ("tower", "qa", ["about 330 metres", "330 metres"], "about 330 m", 0.0),
        ("river", "qa", ["the Volga"], "Volga", 1.0),
        ("sea", "qa", ["the Black Sea"], "nowhere", 0.0),
    ]
    assert [r["prompt"] for r in rows] == seen and all(r["prompt"].count("\n\n") == 2 for r in rows)
    # max_people keeps the first N questions; shots still come from the other paragraphs
    assert evaluate(str(small_model), data, tmp_path / "two", shots=2, device="cpu", max_people=2)["qa"]["n"] == 2
    with pytest.raises(InputError, match="shots"):
        evaluate(str(small_model), data, tmp_path / "bad", shots=3, device="cpu")
    assert not (tmp_path / "bad").exists()


def test_evaluate_script_on_the_jsonl(small_model, tmp_path):
    out = tmp_path / "out"
    proc = run_script("evaluate.py", f"model={small_model}", "eval_data=data/wiki_sample.jsonl", f"output_dir={out}",
                      hydra_dir=tmp_path / "hydra")
    assert proc.returncode == 0, proc.stderr[-3000:]
    questions = load_questions(ROWS)
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["qa"] and set(results["qa"]) == {"exact_match", "f1", "n", "exact_match_ci95", "f1_ci95"}
    assert results["qa"]["n"] == len(questions) and 0 <= results["qa"]["exact_match"] <= results["qa"]["f1"] <= 1
    assert "| qa | " in proc.stdout
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    by_text = {q.question: q for q in questions}
    assert len(by_text) == len(questions)  # question texts identify the paragraph of a shot
    assert [r["person"] for r in rows] == [q.id for q in questions]
    for row, asked in zip(rows, questions):
        assert set(row) == {"person", "field", "prompt", "gold", "prediction", "exact_match", "f1"}
        assert row["field"] == "qa" and row["gold"] == asked.answers
        parts = row["prompt"].split("\n\n")
        assert len(parts) == 6 and parts[-1] == f"Question: {asked.question}\nAnswer:"
        for part in parts[:-1]:
            shot = by_text[part.split("\n")[0].removeprefix("Question: ")]
            assert part == f"Question: {shot.question}\nAnswer: {shot.answers[0]}"
            assert shot.context != asked.context  # never the asked question's paragraph
        assert row["exact_match"] == exact_match(row["prediction"], asked.answers)
        assert row["f1"] == pytest.approx(f1_score(row["prediction"], asked.answers))


# --- run_experiment ---------------------------------------------------------------------------------------


def test_experiment_refuses_n_texts_with_a_wiki_dataset(tmp_path):
    with pytest.raises(InputError, match=r"^n_texts=8: .*n_texts=null"):
        run_experiment(name="w", method="plain", model="unused", dataset=NESTED, n_texts=8, out_root=tmp_path)
    assert not (tmp_path / "w").exists()
    exp = RunExperimentConfig(name="w", method="plain", model="unused", dataset=str(NESTED), out_root=str(tmp_path))
    assert training_data(exp, tmp_path) == NESTED


def test_run_experiment_on_the_json(small_model, large_model, tmp_path):
    proc = run_script(
        "run_experiment.py", "experiment=cpu_tiny", f"dataset={NESTED}", "n_texts=null", f"model={small_model}",
        f"small_model={small_model}", f"large_model={large_model}", f"out_root={tmp_path / 'exp'}",
        hydra_dir=tmp_path / "hydra",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "exp" / "cpu_tiny"
    (run,) = (root / "attention_diff").glob("a0.7_b0.05_s0-*")
    info = json.loads((run / "run.json").read_text())
    assert info["n_texts"] == len(load_contexts(NESTED)) == 10 and info["dataset"] == record_path(NESTED)
    assert not (root / "data.csv").exists()
    results = json.loads((run / "eval" / "results.json").read_text())
    assert list(results) == ["qa"] and results["qa"]["n"] == len(load_questions(NESTED))
    assert len(pd.read_csv(run / "aug.csv")) == 3 * 10
