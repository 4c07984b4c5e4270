"""Bad input across the five stages: one table, each row run through the real top-level script.

Each row is (script, overrides, the bad file it needs, the exact ``error:`` line). The script runs as
``__main__`` in this process with ``sys.argv`` set (``runpy``) — the code path a user's command takes,
without paying seconds of importing torch and transformers per row — and the rows marked ``cli`` also run
as a real subprocess. Every row checks: exit status 2, exactly one ``error:`` line on stderr and it is the expected
one, no traceback, and nothing at the output path. Outputs are placed in a folder that does not exist yet,
so "nothing written" also means the folder was not created for a failed run.

Placeholders in the rows: ``{w}`` the row's work folder, ``{out}`` the output folder (missing), ``{bios}``
the 12-biography CSV, ``{small}`` / ``{word}`` tiny models (byte-level BPE / word-level tokenizer), ``{dumps}``
the folder of shared attention dumps (``small``, ``large``, ``word`` of ``{bios}``, ``other`` of another
dataset, ``diff`` = large − small).
"""

from __future__ import annotations

import logging
import runpy
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, run_script
from hydra.core.global_hydra import GlobalHydra

from elusive.artifacts import AttentionDump
from stages import save_attention
from stages import contrast_attention
from elusive.tags import FIELDS

KNOWN = ", ".join(FIELDS)


# --- the bad files ------------------------------------------------------------------------------------------


def _csv(text: str, name: str = "bad.csv"):
    def setup(w: Path, ctx: dict) -> None:
        (w / name).write_text(text, encoding="utf-8")
    return setup


def _bytes(data: bytes, name: str = "bad.csv"):
    def setup(w: Path, ctx: dict) -> None:
        (w / name).write_bytes(data)
    return setup


def _truncated(w: Path, ctx: dict) -> None:
    raw = (ctx["dumps"] / "small.safetensors").read_bytes()
    (w / "cut.safetensors").write_bytes(raw[: len(raw) // 2])


def _tampered(w: Path, ctx: dict) -> None:
    raw = bytearray((ctx["dumps"] / "small.safetensors").read_bytes())
    raw[-5] ^= 0x01  # one bit of one score: still a valid file, but not the one that was written
    (w / "tampered.safetensors").write_bytes(bytes(raw))


def _other_ids(w: Path, ctx: dict) -> None:
    """A well-formed dump of the right dataset and tokenizer whose token ids are not the dataset's."""
    dump = AttentionDump.load(ctx["dumps"] / "small")
    dump.input_ids = dump.input_ids.copy()
    dump.input_ids[dump.text_slice(0)] = np.roll(dump.input_ids[dump.text_slice(0)], 1)
    dump.save(w / "ids")


def _few_people(w: Path, ctx: dict) -> None:
    frame = pd.read_csv(ROOT / "data" / "biography_fewshot.csv").head(3)
    frame.to_csv(w / "fewshot.csv", index=False)


def _untagged_major(w: Path, ctx: dict) -> None:
    frame = pd.read_csv(ctx["bios"])
    frame.loc[1, "text"] = frame.loc[1, "text"].replace("<major>", "").replace("</major>", "")
    frame.to_csv(w / "eval.csv", index=False)


def _models_folder(w: Path, ctx: dict) -> None:
    (w / "models" / "qwen2.5-coder-0.5b").mkdir(parents=True)


def _empty_dir(w: Path, ctx: dict) -> None:
    (w / "not_an_adapter").mkdir()


BIO = "<name>Ann Lee</name> was born on <date>May 1, 1990</date>. She lived in <city>Oslo</city>."
NON_UTF8 = b"text\n<name>Ann Lee</name> lived in Malm\xf6.\n"  # Latin-1, not UTF-8

# (id, script, overrides, setup, expected error line, outputs that must not exist, run also as a subprocess)
SA = "save_attention.py"
CA = "contrast_attention.py"
DA = "data_augmentation.py"
TR = "train.py"
EV = "evaluate.py"
SA_ARGS = ("model={small}", "save_name={out}/attn", "device=cpu")
CA_ARGS = ("attn_diff={out}/diff",)
DA_ARGS = ("model={small}", "dataset={bios}", "save_name={out}/aug", "multiply=2")
TR_ARGS = ("model={small}", "dataset={bios}", "model_dir={out}/lora", "device=cpu", "epochs=1")
EV_ARGS = ("model={small}", "eval_data={bios}", "output_dir={out}/eval", "device=cpu", "max_people=2")
SA_OUT = ("{out}/attn.safetensors",)
CA_OUT = ("{out}/diff.safetensors",)
DA_OUT = ("{out}/aug.csv", "{out}/aug.json")
TR_OUT = ("{out}/lora",)
EV_OUT = ("{out}/eval",)

ROWS = [
    # stage 1: the dataset
    ("missing-file", SA, ("dataset={w}/absent.csv", *SA_ARGS), None,
     "error: dataset={w}/absent.csv: no such file; fix the path", SA_OUT, False),
    ("no-text-column", SA, ("dataset={w}/bad.csv", *SA_ARGS), _csv(f'body\n"{BIO}"\n'),
     "error: dataset={w}/bad.csv: missing column(s) text (has: body); the file needs a header row with text", SA_OUT, False),
    ("empty-csv", SA, ("dataset={w}/bad.csv", *SA_ARGS), _csv("text\n"),
     "error: dataset={w}/bad.csv: the file has no rows; give a dataset with at least one text", SA_OUT, False),
    ("zero-byte-csv", SA, ("dataset={w}/bad.csv", *SA_ARGS), _csv(""),
     "error: dataset={w}/bad.csv: the file is empty; it needs a header row with text and rows", SA_OUT, False),
    ("unclosed-tag", SA, ("dataset={w}/bad.csv", *SA_ARGS), _csv(f'text\n"{BIO}"\n"<name>Bo Li</name> lived in <city>Rome."\n'),
     "error: dataset={w}/bad.csv: row 1: <city> is never closed; fix the tags in that row", SA_OUT, False),
    ("mismatched-tag", SA, ("dataset={w}/bad.csv", *SA_ARGS), _csv('text\n"<name>Bo Li</city> lived in Rome."\n'),
     "error: dataset={w}/bad.csv: row 0: </city> closes a tag that is not open (<name> is); fix the tags in that row",
     SA_OUT, False),
    ("unknown-tag", SA, ("dataset={w}/bad.csv", *SA_ARGS), _csv('text\n"<name>Bo Li</name> worked at <compnay>ACME</compnay>."\n'),
     f"error: dataset={{w}}/bad.csv: row 0: unknown tag <compnay> (known: {KNOWN}); fix the tags in that row",
     SA_OUT, False),
    ("non-utf8", SA, ("dataset={w}/bad.csv", *SA_ARGS), _bytes(NON_UTF8),
     "error: dataset={w}/bad.csv: not UTF-8 text (byte 0xf6 on line 2: invalid start byte); save the file as UTF-8",
     SA_OUT, False),
    ("model-path-typo", SA, ("model={w}/models/qwen-0.5b", "dataset={bios}", "save_name={out}/attn"), _models_folder,
     "error: model={w}/models/qwen-0.5b: no such model folder ({w}/models/ has: qwen2.5-coder-0.5b); fix the path",
     SA_OUT, False),
    ("unknown-quant", SA, ("dataset={bios}", "quant=3bit", *SA_ARGS), None,
     "error: quant=3bit: unknown; use one of null, 8bit, 4bit", SA_OUT, False),
    ("max-texts-0", SA, ("dataset={bios}", "max_texts=0", *SA_ARGS), None,
     "error: max_texts=0: must be >= 1, or null for all texts", SA_OUT, False),
    # stage 2: the two dumps
    ("two-datasets", CA, ("attn_dump_large={dumps}/other", "attn_dump_small={dumps}/small", *CA_ARGS), None,
     ("error: attn_dump_large={dumps}/other and attn_dump_small={dumps}/small come from different datasets "
      "('{dumps}/other.csv' vs '{bios}'); run save_attention.py on the same dataset for both models"), CA_OUT, False),
    ("two-tokenizers", CA, ("attn_dump_large={dumps}/word", "attn_dump_small={dumps}/small", *CA_ARGS), None,
     ("error: attn_dump_large={dumps}/word and attn_dump_small={dumps}/small were made with different tokenizers "
      "('{word}' vs '{small}'); extract both with models of one family, or add cross_tokenizer=true to contrast them "
      "word by word"), CA_OUT, True),
    ("truncated-dump", CA, ("attn_dump_large={w}/cut", "attn_dump_small={dumps}/small", *CA_ARGS), _truncated,
     ("error: attn_dump_large={w}/cut.safetensors: not a readable safetensors file (Error while deserializing header: "
      "incomplete metadata, file not fully covered); the file is truncated or damaged, recreate it"), CA_OUT, False),
    ("tampered-dump", CA, ("attn_dump_large={dumps}/large", "attn_dump_small={w}/tampered", *CA_ARGS), _tampered,
     ("error: attn_dump_small={w}/tampered.safetensors: its tensor bytes do not match the SHA-256 in its header "
      "(altered or damaged); recreate it with the stage that wrote it"), CA_OUT, False),
    ("missing-dump", CA, ("attn_dump_large={dumps}/large", "attn_dump_small={w}/absent", *CA_ARGS), None,
     ("error: attn_dump_small={w}/absent: no attention dump at {w}/absent.safetensors; run save_attention.py first or "
      "fix the path"), CA_OUT, False),
    # stage 3: settings and the ranking dump
    ("alpha-1.5", DA, ("alpha=1.5", "attn_weights={dumps}/diff", *DA_ARGS), None,
     "error: alpha=1.5: must be in [0, 1] (the largest drop probability)", DA_OUT, True),
    ("beta-negative", DA, ("beta=-1", "attn_weights={dumps}/diff", *DA_ARGS), None,
     "error: beta=-1.0: must be >= 0 (how fast the drop probability rises with rank)", DA_OUT, False),
    ("multiply-0", DA, ("model={small}", "dataset={bios}", "save_name={out}/aug", "attn_weights={dumps}/diff", "multiply=0"),
     None,
     "error: multiply=0: must be a whole number in [1, 1000] (augmented copies per text)", DA_OUT, False),
    ("unknown-augment-type", DA, ("augment_type=dropout", *DA_ARGS), None,
     "error: augment_type=dropout: unknown; use one of random, attention, attention_diff, shuffled, position", DA_OUT,
     False),
    ("ranked-without-dump", DA, ("augment_type=attention", "attn_weights=null", *DA_ARGS), None,
     "error: attn_weights=null: augment_type=attention needs a dump; give attn_weights=<save_name>", DA_OUT, False),
    ("dump-ids-mismatch", DA, ("augment_type=attention", "attn_weights={w}/ids", *DA_ARGS), _other_ids,
     ("error: attn_weights={w}/ids: text 0 was tokenised differently than the tokenizer of model= does now; extract the "
      "dump with the same tokenizer and text_prefix"), DA_OUT, False),
    ("dump-of-other-tokenizer", DA, ("augment_type=attention", "attn_weights={dumps}/word", *DA_ARGS), None,
     ("error: attn_weights={dumps}/word: was made with tokenizer {word}, not the one of model={small}; set model= to a "
      "model with the dump's tokenizer"), DA_OUT, False),
    ("dump-of-other-dataset", DA, ("augment_type=attention", "attn_weights={dumps}/other", *DA_ARGS), None,
     ("error: attn_weights={dumps}/other: was computed on a different dataset ({dumps}/other.csv) than dataset={bios}; "
      "rerun save_attention.py on this dataset"), DA_OUT, False),
    # stage 4
    ("train-unknown-quant", TR, (*TR_ARGS, "quant=3bit"), None,
     "error: quant=3bit: unknown; use one of null, 8bit, 4bit", TR_OUT, False),
    ("train-resume-nothing", TR, (*TR_ARGS, "resume=true"), None,
     "error: resume=true: no complete checkpoint-* folder in model_dir={out}/lora; train without resume first",
     TR_OUT, False),
    ("train-accumulation-0", TR, (*TR_ARGS, "gradient_accumulation_steps=0"), None,
     "error: gradient_accumulation_steps=0: must be >= 1", TR_OUT, False),
    ("train-negative-lr", TR, (*TR_ARGS, "learning_rate=-1"), None,
     "error: learning_rate=-1.0: must be > 0", TR_OUT, False),
    ("train-unclosed-tag", TR, ("model={small}", "dataset={w}/bad.csv", "model_dir={out}/lora", "device=cpu"),
     _csv('text\n"<name>Bo Li</name> lived in <city>Rome."\n'),
     "error: dataset={w}/bad.csv: row 0: <city> is never closed; fix the tags in that row", TR_OUT, False),
    # stage 5
    ("model-dir-without-adapter", EV, (*EV_ARGS, "model_dir={w}/not_an_adapter"), _empty_dir,
     ("error: model_dir={w}/not_an_adapter: no adapter_config.json; give a train.py output or a checkpoint-N folder, or "
      "model_dir=null"), EV_OUT, False),
    ("prompt-without-name", EV, (*EV_ARGS, "prompts={w}/prompts.csv"), _csv('field,prompt\ncity,"Where was he born?"\n', "prompts.csv"),
     ("error: prompts={w}/prompts.csv: the prompt for field 'city' has no {{name}}; write e.g. 'Where was {{name}} "
      "born?\\nAnswer:'"), EV_OUT, False),
    ("fewer-people-than-shots", EV, (*EV_ARGS, "fewshot_data={w}/fewshot.csv", "shots=5"), _few_people,
     ("error: fewshot_data: only 3 usable examples for shots=5 (people not asked about); lower shots= or add people to "
      "fewshot_data"), EV_OUT, False),
    ("eval-field-not-tagged", EV, ("model={small}", "eval_data={w}/eval.csv", "output_dir={out}/eval", "device=cpu"),
     _untagged_major,
     ("error: eval_data={w}/eval.csv: row 1 has no <major>...</major> tag; tag every field the prompts ask about (or "
      "drop that field from the prompts file)"), EV_OUT, False),
    ("eval-max-people-0", EV, ("model={small}", "eval_data={bios}", "output_dir={out}/eval", "max_people=0"), None,
     "error: max_people=0: must be >= 1, or null for everyone in eval_data", EV_OUT, False),
    ("eval-unknown-quant", EV, (*EV_ARGS, "quant=4bits"), None,
     "error: quant=4bits: unknown; use one of null, 8bit, 4bit", EV_OUT, False),
]


@pytest.fixture(scope="module")
def ctx(small_model, large_model, word_model, bios, tmp_path_factory) -> dict:
    """The shared inputs of the rows: tiny models and attention dumps of the 12 biographies."""
    dumps = tmp_path_factory.mktemp("dumps")
    other = dumps / "other.csv"
    pd.read_csv(bios).head(5).to_csv(other, index=False)
    save_attention(str(small_model), bios, dumps / "small", device="cpu")
    save_attention(str(large_model), bios, dumps / "large", device="cpu")
    save_attention(str(word_model), bios, dumps / "word", device="cpu")
    save_attention(str(large_model), other, dumps / "other", device="cpu")
    contrast_attention(dumps / "large", dumps / "small", dumps / "diff")
    return {"small": small_model, "word": word_model, "bios": bios, "dumps": dumps}


def run_in_process(script: str, overrides: list[str], capsys) -> tuple[int, str]:
    """Run the script as ``__main__`` with ``sys.argv`` set, as ``python script ...`` would; return status and stderr."""
    GlobalHydra.instance().clear()
    capsys.readouterr()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # Hydra configures logging for the run: restore it after
    status = 0
    with mock.patch.object(sys, "argv", [str(ROOT / script), *overrides]):
        try:
            runpy.run_path(str(ROOT / script), run_name="__main__")
        except SystemExit as exited:
            status = exited.code
        finally:
            GlobalHydra.instance().clear()
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
    return status, capsys.readouterr().err


@pytest.mark.parametrize("rid, script, overrides, setup, expected, outputs, cli", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_error_line_exit_2_and_nothing_written(
    rid, script, overrides, setup, expected, outputs, cli, ctx, tmp_path, capsys
):
    w = tmp_path / "work"
    w.mkdir()
    if setup is not None:
        setup(w, ctx)
    values = {**ctx, "w": w, "out": tmp_path / "missing" / "out"}
    args = [o.format(**values) for o in overrides] + [f"hydra.run.dir={tmp_path / 'hydra'}"]
    expected = expected.format(**values)
    results = [run_in_process(script, args, capsys)]
    if cli:
        proc = run_script(script, *args)
        results.append((proc.returncode, proc.stderr))
    for status, stderr in results:
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert status == 2, stderr[-2000:]
        assert errors == [expected]
        assert "Traceback" not in stderr
    for output in outputs:
        assert not Path(output.format(**values)).exists()
    assert not (tmp_path / "missing").exists()


def test_the_matrix_covers_every_stage_and_twenty_inputs():
    assert len(ROWS) >= 20 and len({r[0] for r in ROWS}) == len(ROWS)
    assert {r[1] for r in ROWS} == {SA, CA, DA, TR, EV}
    assert sum(r[6] for r in ROWS) >= 2  # some rows also as a real command line


def test_outputs_in_missing_folders_are_created_by_every_stage(ctx, tmp_path, capsys):
    """The policy for an output path inside a folder that does not exist: every stage creates the folders."""
    out = tmp_path / "not" / "yet"
    d = ctx["dumps"]
    runs = [
        (SA, [f"model={ctx['small']}", f"dataset={ctx['bios']}", f"save_name={out}/sa/attn", "device=cpu"], "sa/attn.safetensors"),
        (CA, [f"attn_dump_large={d}/large", f"attn_dump_small={d}/small", f"attn_diff={out}/ca/diff"], "ca/diff.safetensors"),
        (DA, [f"model={ctx['small']}", f"dataset={ctx['bios']}", f"attn_weights={d}/diff", f"save_name={out}/da/aug",
              "multiply=1"], "da/aug.csv"),
        (TR, [f"model={ctx['small']}", f"dataset={ctx['bios']}", f"model_dir={out}/tr/lora", "device=cpu", "epochs=1",
              "batch_size=6"], "tr/lora/adapter_model.safetensors"),
        (EV, [f"model={ctx['small']}", f"eval_data={ctx['bios']}", f"output_dir={out}/ev/eval", "device=cpu", "max_people=1",
              "shots=1", "max_new_tokens=2"], "ev/eval/predictions.jsonl"),
    ]
    for script, overrides, written in runs:
        status, stderr = run_in_process(script, [*overrides, f"hydra.run.dir={tmp_path / 'hydra'}"], capsys)
        assert status == 0, stderr[-2000:]
        assert (out / written).is_file() and (out / written).stat().st_size > 0
