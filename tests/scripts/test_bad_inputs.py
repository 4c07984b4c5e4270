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

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.run import ROOT, run_in_process, run_script
from helpers.stages import contrast_attention, save_attention

from elusive.attention.dump import AttentionDump, canonical_safetensors
from elusive.core.identity import base_identity
from elusive.text.tags import FIELDS

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


def _copy(name: str, source: str, into: str | None = None):
    """Copy a shared input (``small``, ``bios``, a dump) into the work folder, so the row may point outputs at it."""
    def setup(w: Path, ctx: dict) -> None:
        src = ctx[source] if source in ctx else ROOT / source
        target = w / (into or name)
        if Path(src).is_dir():
            shutil.copytree(src, target)
        else:
            shutil.copyfile(src, target)
    return setup


def _both(*setups):
    def setup(w: Path, ctx: dict) -> None:
        for one in setups:
            one(w, ctx)
    return setup


def _dump_copy(w: Path, ctx: dict) -> None:
    shutil.copyfile(ctx["dumps"] / "small.safetensors", w / "small.safetensors")


def _nan_dump(w: Path, ctx: dict) -> None:
    """A dump whose header hash is right but whose scores hold a NaN (as a float16 overflow would leave)."""
    from safetensors.numpy import save

    dump = AttentionDump.load(ctx["dumps"] / "small")
    scores = dump.scores.copy()
    scores[dump.text_slice(2)][1] = np.nan
    tensors = {"scores": scores, "offsets": dump.offsets, "input_ids": dump.input_ids, "char_spans": dump.char_spans,
               "ranked": dump.ranked.astype(np.uint8), **dump.extra}
    metadata = {k: v for k, v in dump.metadata.items() if k != "data_sha256"}
    (w / "nan.safetensors").write_bytes(canonical_safetensors(save(tensors, metadata=metadata), data_sha256=True))


def _foreign_folder(w: Path, ctx: dict) -> None:
    (w / "notes").mkdir()
    (w / "notes" / "todo.txt").write_text("mine\n")


def _a_file(w: Path, ctx: dict) -> None:
    (w / "f.txt").write_text("a file\n")


def _folder_named_like_a_dump(w: Path, ctx: dict) -> None:
    (w / "attn.safetensors").mkdir()


def _link_to_model(w: Path, ctx: dict) -> None:
    shutil.copytree(ctx["small"], w / "small")
    (w / "link").symlink_to(w / "small")


def _fake_adapter(w: Path, ctx: dict) -> None:
    (w / "lora").mkdir()
    (w / "lora" / "adapter_config.json").write_text("{}\n")


def _adapter_of_large(w: Path, ctx: dict) -> None:
    """An adapter folder whose train_meta.json says it was trained on the large model."""
    _fake_adapter(w, ctx)
    hashes = base_identity(str(ctx["large"]))
    meta = {"base_model": str(ctx["large"]), "base_config_sha256": hashes["config_sha256"],
            "base_weights_sha256": hashes["weights_sha256"]}
    (w / "lora" / "train_meta.json").write_text(json.dumps(meta))


def _eval_folder(w: Path, ctx: dict) -> None:
    """An evaluate.py output folder (its marker, predictions.jsonl, results.json) and a second evaluation."""
    for name in ("eval", "eval2"):
        (w / name).mkdir()
        rows = [{"person": p, "field": "city", "prompt": f"Where was {p} born?\nAnswer:", "gold": "Oslo",
                 "prediction": "Oslo", "exact_match": 1.0, "f1": 1.0} for p in ("Ann Lee", "Bo Li")]
        (w / name / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (w / name / "results.json").write_text('{"city": {"exact_match": 1.0, "f1": 1.0, "n": 2}}\n')
        (w / name / ".elusive-evaluate").write_text("{}\n")


def _truncated_results(w: Path, ctx: dict) -> None:
    (w / "run").mkdir()
    (w / "run" / "results.json").write_text('{"city": {"exact_match": 0.5, "f1"')


def _empty_gold(w: Path, ctx: dict) -> None:
    frame = pd.read_csv(ctx["bios"])
    text = frame.loc[1, "text"]
    start, end = text.index("<company>") + len("<company>"), text.index("</company>")
    frame.loc[1, "text"] = text[:start] + "The" + text[end:]
    frame.to_csv(w / "eval.csv", index=False)


def _model_copy_dump(w: Path, ctx: dict) -> None:
    """The small model copied to another folder, and its attention dump: one model under two paths."""
    shutil.copytree(ctx["small"], w / "copy")
    save_attention(str(w / "copy"), ctx["bios"], w / "copy_attn", device="cpu")


def _eval_rows(edit):
    def setup(w: Path, ctx: dict) -> None:
        frame = pd.read_csv(ctx["bios"])
        edit(frame)
        frame.to_csv(w / "eval.csv", index=False)
    return setup


def _duplicate_person(frame: pd.DataFrame) -> None:
    frame.loc[5, "text"] = frame.loc[2, "text"]


def _empty_name(frame: pd.DataFrame) -> None:
    text = frame.loc[3, "text"]
    frame.loc[3, "text"] = text[: text.index("<name>") + 6] + text[text.index("</name>") :]


def _predictions(gold: str | None = None, made_on_other: bool = False):
    """predictions.jsonl about row 0's city, with ``gold`` (else the right one); ``made_on_other``: its
    eval_meta.json names other.csv, where row 0's sentences come in another order (same people, same facts)."""
    def setup(w: Path, ctx: dict) -> None:
        from elusive.text.tags import parse_tagged

        frame = pd.read_csv(ctx["bios"])
        _, spans = parse_tagged(frame["text"][0])
        values = {s.field: s.value for s in spans}
        record = {"person": values["name"], "field": "city", "prompt": "p", "gold": gold or values["city"],
                  "prediction": "x", "exact_match": 0.0, "f1": 0.0}
        (w / "eval").mkdir()
        (w / "eval" / "predictions.jsonl").write_text(json.dumps(record) + "\n")
        if made_on_other:
            first, rest = frame.loc[0, "text"].split(". ", 1)
            frame.loc[0, "text"] = rest.rstrip(".") + ". " + first + "."
            frame.to_csv(w / "other.csv", index=False)
            (w / "eval" / "eval_meta.json").write_text(json.dumps({
                "eval_data": str(w / "other.csv"), "eval_data_sha256": hashlib.sha256((w / "other.csv").read_bytes()).hexdigest()}))
    return setup


def _loop(w: Path, ctx: dict) -> None:
    (w / "loop").symlink_to(w / "loop")


BIO = "<name>Ann Lee</name> was born on <date>May 1, 1990</date>. She lived in <city>Oslo</city>."
COMMAS = 'text\n"Ann Lee, a chemist, lived in Oslo."\nBo Li, a cook, lived in Rome.\n'  # row 1 is not quoted
NON_UTF8 = b"text\n<name>Ann Lee</name> lived in Malm\xf6.\n"  # Latin-1, not UTF-8

# (id, script, overrides, setup, expected error line, outputs that must not exist, run also as a subprocess)
SA = "save_attention.py"
CA = "contrast_attention.py"
DA = "data_augmentation.py"
TR = "train.py"
EV = "evaluate.py"
MB = "make_biographies.py"
CR = "compare_runs.py"
PD = "plot_accuracy_distance.py"
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
    # --- an output never overwrites, sits inside or holds an input ---------------------------------------------
    ("aug-over-its-dataset", DA, ("model={small}", "dataset={w}/bio.csv", "save_name={w}/bio", "augment_type=random"),
     _copy("bio.csv", "bios"),
     ("error: save_name={w}/bio: would write {w}/bio.csv, which is the input dataset={w}/bio.csv; choose another "
      "save_name"), (), True),
    ("aug-sidecar-over-wiki", DA, ("model={small}", "dataset={w}/wiki.json", "save_name={w}/wiki", "augment_type=random"),
     _copy("wiki.json", "data/wiki_sample.json"),
     ("error: save_name={w}/wiki: would write {w}/wiki.json, which is the input dataset={w}/wiki.json; choose another "
      "save_name"), ("{w}/wiki.csv",), False),
    ("aug-inside-its-model", DA, ("model={w}/small", "dataset={bios}", "augment_type=random", "save_name={w}/small/aug"),
     _copy("small", "small"),
     ("error: save_name={w}/small/aug: {w}/small/aug.csv lies inside the input model={w}/small; give save_name a path "
      "outside it"), (), False),
    ("train-into-its-model", TR, ("model={w}/small", "dataset={bios}", "model_dir={w}/small", "device=cpu"),
     _copy("small", "small"),
     ("error: model_dir={w}/small: would write {w}/small, which is the input model={w}/small; choose another "
      "model_dir"), (), True),
    ("train-inside-its-model", TR, ("model={w}/small", "dataset={bios}", "model_dir={w}/small/lora", "device=cpu"),
     _copy("small", "small"),
     ("error: model_dir={w}/small/lora: {w}/small/lora lies inside the input model={w}/small; give model_dir a path "
      "outside it"), ("{w}/small/lora",), False),
    ("train-through-a-symlink", TR, ("model={w}/small", "dataset={bios}", "model_dir={w}/link", "device=cpu"),
     _link_to_model,
     ("error: model_dir={w}/link: would write {w}/small, which is the input model={w}/small; choose another "
      "model_dir"), (), False),
    ("train-folder-holds-dataset", TR, ("model={small}", "dataset={w}/bio.csv", "model_dir={w}", "device=cpu"),
     _copy("bio.csv", "bios"),
     ("error: model_dir={w}: {w} contains the input dataset={w}/bio.csv; give model_dir a path that does not hold "
      "the inputs"), (), False),
    ("train-into-a-foreign-folder", TR, (*TR_ARGS[:2], "model_dir={w}/notes", "device=cpu"), _foreign_folder,
     ("error: model_dir={w}/notes: the folder holds other files (todo.txt) and is not a train output; give model_dir "
      "a new or empty folder"), (), False),
    ("attention-into-its-model", SA, ("model={w}/small", "dataset={bios}", "save_name={w}/small/attn", "device=cpu"),
     _copy("small", "small"),
     ("error: save_name={w}/small/attn: {w}/small/attn.safetensors lies inside the input model={w}/small; give "
      "save_name a path outside it"), ("{w}/small/attn.safetensors",), False),
    ("contrast-over-a-dump", CA, ("attn_dump_large={dumps}/large", "attn_dump_small={w}/small", "attn_diff={w}/small"),
     _dump_copy,
     ("error: attn_diff={w}/small: would write {w}/small.safetensors, which is the input "
      "attn_dump_small={w}/small.safetensors; choose another attn_diff"), (), False),
    ("eval-inside-its-adapter", EV, (*EV_ARGS[:3], "model_dir={w}/lora", "output_dir={w}/lora/eval", "device=cpu"),
     _fake_adapter,
     ("error: output_dir={w}/lora/eval: {w}/lora/eval lies inside the input model_dir={w}/lora; give output_dir a "
      "path outside it"), ("{w}/lora/eval",), False),
    # --- class 5: an output location that cannot work, found before the work ----------------------------------
    ("eval-output-is-a-file", EV, (*EV_ARGS[:3], "output_dir={w}/f.txt", "device=cpu"), _a_file,
     "error: output_dir={w}/f.txt: {w}/f.txt is a file, not a folder; give a folder path for output_dir", (), False),
    ("attention-output-under-a-file", SA, ("model={small}", "dataset={bios}", "save_name={w}/f.txt/attn", "device=cpu"),
     _a_file,
     "error: save_name={w}/f.txt/attn: {w}/f.txt is a file, so nothing can be written under it; fix the path",
     (), False),
    ("attention-output-is-a-folder", SA, ("model={small}", "dataset={bios}", "save_name={w}/attn", "device=cpu"),
     _folder_named_like_a_dump,
     ("error: save_name={w}/attn: {w}/attn.safetensors is a folder; give save_name a file path (outputs are files)"),
     (), False),
    ("biographies-under-a-file", MB, ("output={w}/f.txt/bio.csv", "n_people=3"), _a_file,
     "error: output={w}/f.txt/bio.csv: {w}/f.txt is a file, so nothing can be written under it; fix the path",
     (), False),
    ("compare-inside-a-run", CR, ("a={w}/lora", "b={w}/lora", "output={w}/lora/cmp"), _fake_adapter,
     "error: output={w}/lora/cmp: {w}/lora/cmp.json lies inside the input a={w}/lora; give output a path outside it",
     (), False),
    ("compare-over-evaluate-results", CR, ("a={w}/eval/predictions.jsonl", "b={w}/eval2/predictions.jsonl",
                                           "output={w}/eval/results"), _eval_folder,
     ("error: output={w}/eval/results: would replace {w}/eval/results.json, a file in {w}/eval, which evaluate "
      "fills; choose another output (outside that folder)"), (), True),
    ("compare-seeds-unpaired", CR, ("a=[{w}/eval,{w}/eval2]", "b={w}/eval2", "output={out}/cmp"), _eval_folder,
     ("error: a=[{w}/eval,{w}/eval2], b={w}/eval2: 2 evaluations in a but 1 in b; give one evaluation per training "
      "seed in both, in the same seed order"), ("{out}/cmp.json",), False),
    ("summarize-truncated-results", "summarize.py", ("runs=[{w}/run]", "output={out}/table"),
     _truncated_results,
     ("error: runs={w}/run: {w}/run/results.json is not valid JSON (Expecting ':' delimiter: line 1 column 35 (char "
      "34)); give folders of evaluate.py runs (or remove that file)"), ("{out}/table.md",), False),
    # --- class 2: numbers that are not numbers, not finite or out of range ------------------------------------
    ("train-lr-inf", TR, (*TR_ARGS, "learning_rate=inf"), None,
     "error: learning_rate=inf: must be a finite number; give e.g. learning_rate=0.0005", TR_OUT, True),
    ("train-lr-nan", TR, (*TR_ARGS, "learning_rate=nan"), None,
     "error: learning_rate=nan: must be a finite number; give e.g. learning_rate=0.0005", TR_OUT, False),
    ("train-epochs-inf", TR, (*TR_ARGS[:-1], "epochs=inf"), None,
     "error: epochs=inf: must be a finite number; give e.g. epochs=10.0", TR_OUT, False),
    ("train-epochs-huge", TR, (*TR_ARGS[:-1], "epochs=1e6"), None,
     "error: epochs=1000000.0: must be in (0, 1000] (training epochs)", TR_OUT, False),
    ("train-seed-negative", TR, (*TR_ARGS, "seed=-1"), None,
     "error: seed=-1: must be in [0, 4294967295] (an integer seed)", TR_OUT, False),
    ("train-seed-2-70", TR, (*TR_ARGS, "seed=1180591620717411303424"), None,
     "error: seed=1180591620717411303424: must be in [0, 4294967295] (an integer seed)", TR_OUT, False),
    ("train-batch-size-2.5", TR, (*TR_ARGS, "batch_size=2.5"), None,
     "error: batch_size=2.5: must be an integer; give e.g. batch_size=8", TR_OUT, False),
    ("aug-beta-nan", DA, (*DA_ARGS, "augment_type=random", "beta=nan"), None,
     "error: beta=nan: must be a finite number; give e.g. beta=0.05", DA_OUT, False),
    ("aug-alpha-not-a-number", DA, (*DA_ARGS, "augment_type=random", "alpha=0.7x"), None,
     "error: alpha=0.7x: must be a number; give e.g. alpha=0.7", DA_OUT, False),
    ("aug-multiply-ten", DA, ("model={small}", "dataset={bios}", "save_name={out}/aug", "augment_type=random",
                              "multiply=ten"), None,
     "error: multiply=ten: must be an integer; give e.g. multiply=10", DA_OUT, False),
    ("aug-multiply-1e9", DA, ("model={small}", "dataset={bios}", "save_name={out}/aug", "augment_type=random",
                              "multiply=1000000000"), None,
     "error: multiply=1000000000: must be a whole number in [1, 1000] (augmented copies per text)", DA_OUT, False),
    ("eval-shots-1.5", EV, (*EV_ARGS, "shots=1.5"), None,
     "error: shots=1.5: must be an integer; give e.g. shots=null", EV_OUT, False),
    ("contrast-nan-dump", CA, ("attn_dump_large={dumps}/large", "attn_dump_small={w}/nan", *CA_ARGS), _nan_dump,
     ("error: attn_dump_small={w}/nan.safetensors: text 2's scores hold NaN or infinity, which would rank tokens "
      "arbitrarily; recreate the dump (save_attention.py dtype=float32)"), CA_OUT, False),
    ("aug-nan-dump", DA, ("augment_type=attention", "attn_weights={w}/nan", *DA_ARGS), _nan_dump,
     ("error: attn_weights={w}/nan.safetensors: text 2's scores hold NaN or infinity, which would rank tokens "
      "arbitrarily; recreate the dump (save_attention.py dtype=float32)"), DA_OUT, False),
    # --- class 3: inputs that would be read wrongly without a word --------------------------------------------
    ("attention-unquoted-commas", SA, ("dataset={w}/bad.csv", *SA_ARGS), _csv(COMMAS),
     ("error: dataset={w}/bad.csv: row 1 (line 3) has 3 fields, the header has 1; quote a text that contains commas "
      "(\"...\", as pandas and Excel write it)"), SA_OUT, False),
    ("train-unquoted-commas", TR, ("model={small}", "dataset={w}/bad.csv", "model_dir={out}/lora", "device=cpu"),
     _csv(COMMAS),
     ("error: dataset={w}/bad.csv: row 1 (line 3) has 3 fields, the header has 1; quote a text that contains commas "
      "(\"...\", as pandas and Excel write it)"), TR_OUT, False),
    ("eval-adapter-of-another-base", EV, (*EV_ARGS[:3], "model_dir={w}/lora", "output_dir={out}/eval", "device=cpu"),
     _adapter_of_large,
     ("error: model_dir={w}/lora: was trained on base model {large}, and the SHA-256 of its config.json differs from "
      "model={small}'s; evaluate the adapter with the base model it was trained on"), EV_OUT, True),
    ("eval-gold-normalises-to-empty", EV, ("model={small}", "eval_data={w}/eval.csv", "output_dir={out}/eval",
                                           "device=cpu"), _empty_gold,
     ("error: eval_data={w}/eval.csv: row 1: the company 'The' is empty once lower-cased and stripped of punctuation "
      "and articles (SQuAD normalisation), so an empty answer would count as correct; give the real answer or drop "
      "the row"), EV_OUT, False),
    ("eval-prompt-beyond-positions", EV, (*EV_ARGS, "shots=1", "max_new_tokens=1020"), None,
     ("error: max_new_tokens=1020: the prompt about 'Ignacio Wright' (date) has 41 tokens, so with the answer it "
      "needs 1061 positions, more than the model's 1024; lower shots= (or max_new_tokens), or shorten the texts"),
     EV_OUT, False),
    ("released-key-name", EV, (*EV_ARGS, "+prompt_data=p.csv"), None,
     "error: prompt_data=p.csv: unknown key (the released code's name for prompts); use prompts=p.csv", EV_OUT, False),
    ("key-typo", DA, (*DA_ARGS, "alpah=0.5"), None,
     "error: alpah=0.5: unknown key; did you mean alpha? --help lists the keys", DA_OUT, False),
    ("contrast-a-dump-with-itself", CA, ("attn_dump_large={dumps}/small", "attn_dump_small={dumps}/small", *CA_ARGS),
     None,
     ("error: attn_dump_large={dumps}/small and attn_dump_small={dumps}/small are the same model's scores: their "
      "difference is 0 everywhere; give the larger and the smaller model's dumps"), CA_OUT, False),
    # --- overwriting what the user made; sweeps checked before their first job ---------------------------------
    ("biographies-over-a-dataset", MB, ("output={w}/bio.csv", "n_people=3"), _copy("bio.csv", "bios"),
     ("error: output={w}/bio.csv: the file exists (a dataset someone made or committed); give a new output= path, or "
      "add overwrite=true to replace it"), (), True),
    ("sweep-jobs-share-an-output", DA, ("-m", "alpha=0.2,0.9", "augment_type=random", "model={small}", "dataset={bios}",
                                        "save_name={out}/aug", "hydra.sweep.dir={out}/sweep"), None,
     ("error: save_name={out}/aug: sweep jobs 0 (alpha=0.2) and 1 (alpha=0.9) would both write {out}/aug.csv, and "
      "only the last would remain; make it differ per job, e.g. save_name={out}/aug_${{alpha}}"), (), True),
    ("sweep-jobs-share-a-model-dir", TR, ("-m", *TR_ARGS, "learning_rate=1e-3,2e-3", "hydra.sweep.dir={out}/sweep"),
     None,
     ("error: model_dir={out}/lora: sweep jobs 0 (learning_rate=0.001) and 1 (learning_rate=0.002) would both write "
      "{out}/lora, and only the last would remain; make it differ per job, e.g. model_dir={out}/lora_${{learning_rate}}"),
     (), False),
    ("sweep-second-job-missing-dataset", DA, ("-m", "augment_type=random", "model={small}", "dataset={bios},{w}/absent.csv",
                                              "save_name={out}/aug${{hydra:job.num}}", "hydra.sweep.dir={out}/sweep"),
     None, "error: dataset={w}/absent.csv: no such file or folder; fix the path [sweep job 1 (dataset={w}/absent.csv)]",
     (), False),
    ("sweep-second-job-into-a-file", EV, ("-m", *EV_ARGS[:2], "output_dir={out}/eval,{w}/f.txt", "device=cpu",
                                          "hydra.sweep.dir={out}/sweep"), _a_file,
     ("error: output_dir={w}/f.txt: {w}/f.txt is a file, not a folder; give a folder path for output_dir [sweep job 1 "
      "(output_dir={w}/f.txt)]"), (), False),
    # --- accepted but meaningless -------------------------------------------------------------------------------
    ("contrast-one-model-at-two-paths", CA, ("attn_dump_large={w}/copy_attn", "attn_dump_small={dumps}/small", *CA_ARGS),
     _model_copy_dump,
     ("error: attn_dump_large={w}/copy_attn and attn_dump_small={dumps}/small: their difference is 0 everywhere: the "
      "two dumps hold the same scores (one model under two paths?), so stage 3 would rank tokens by position alone; "
      "give the larger and the smaller model's dumps (a ranking by position is augment_type=position)"), CA_OUT, False),
    ("contrast-large-and-small-swapped", CA, ("attn_dump_large={dumps}/small", "attn_dump_small={dumps}/large", *CA_ARGS),
     None,
     ("error: attn_dump_large={dumps}/small and attn_dump_small={dumps}/large: the \"large\" model has fewer parameters "
      "than the small one (82,592 vs 158,544), so large − small would be reversed; swap them: "
      "attn_dump_large={dumps}/large attn_dump_small={dumps}/small"), CA_OUT, True),
    ("eval-person-twice", EV, ("model={small}", "eval_data={w}/eval.csv", "output_dir={out}/eval", "device=cpu"),
     _eval_rows(_duplicate_person),
     ("error: eval_data={w}/eval.csv: rows 2 and 5 are both about 'Harper Sanchez', and a question names only the "
      "person; give each person once (drop or rename the other row)"), EV_OUT, False),
    ("eval-empty-name", EV, ("model={small}", "eval_data={w}/eval.csv", "output_dir={out}/eval", "device=cpu",
                             "mode=completion"), _eval_rows(_empty_name),
     "error: eval_data={w}/eval.csv: row 3: the <name> tag is empty; write the person's name in it", EV_OUT, False),
    ("distance-golds-of-other-data", PD, ("predictions={w}/eval", "eval_data={bios}", "model={small}",
                                          "output={out}/fig"), _predictions(gold="Atlantis, Nowhere"),
     ("error: eval_data={bios}: row 0 gives Ignacio Wright the city 'Buenos Aires, Argentina', but predictions={w}/eval "
      "has the gold 'Atlantis, Nowhere'; give the eval_data the predictions were made on"), ("{out}",), False),
    ("distance-recorded-other-data", PD, ("predictions={w}/eval", "eval_data={bios}", "model={small}",
                                          "output={out}/fig"), _predictions(made_on_other=True),
     ("error: eval_data={bios}: Ignacio Wright's biography differs from the one predictions={w}/eval were made on "
      "({w}/other.csv: other facts or field order); give the eval_data the predictions were made on"), ("{out}",),
     False),
    ("aug-random-alpha-1", DA, ("augment_type=random", "alpha=1", *DA_ARGS), None,
     ("error: alpha=1.0: augment_type=random drops every droppable token with probability alpha, so each copy would "
      "keep no word (punctuation only, or nothing); use alpha < 1 (the paper: 0.6-0.7)"),
     DA_OUT, False),
    ("train-an-empty-original", TR, ("model={small}", "dataset={w}/aug.csv", "model_dir={out}/lora", "device=cpu"),
     _csv('text,source_row,copy\nAnn Lee lived in Oslo,0,0\n,0,1\n" ",1,0\n', "aug.csv"),  # an empty copy: left out
     "error: dataset={w}/aug.csv: row 2 has an empty text; remove it or fill it in", TR_OUT, False),
    # --- tracebacks before: loops, interpolations, characters Hydra's grammar reads --------------------------------
    ("output-through-a-symlink-loop", MB, ("output={w}/loop/bio.csv", "n_people=3"), _loop,
     ("error: output={w}/loop/bio.csv: {w}/loop/bio.csv goes through a symlink that leads back to itself (a loop); fix "
      "the link or choose another output"), (), True),
    ("dump-name-a-symlink-loop", SA, ("model={small}", "dataset={bios}", "save_name={w}/loop/attn", "device=cpu"), _loop,
     ("error: save_name={w}/loop/attn: {w}/loop/attn.safetensors goes through a symlink that leads back to itself (a "
      "loop); fix the link or choose another save_name"), (), False),
    ("unresolvable-interpolation", SA, ("model={small}", "dataset={bios}", "save_name=${{oops}}/attn", "device=cpu"),
     None, "error: save_name=${{oops}}/attn: cannot be resolved (Interpolation key 'oops' not found); fix or quote the "
     "${{...}} in it", (), True),
    ("path-with-a-comma", MB, ("output={out}/a,b.csv", "n_people=3"), None,
     ("error: output={out}/a,b.csv: Hydra reads the commas as several values to sweep over; quote the value to keep it "
      "whole (\"output='{out}/a,b.csv'\"), or add -m to run one job per value"), (), True),
    ("sweep-without-m", DA, (*DA_ARGS, "augment_type=random", "alpha=0.5,0.7"), None,
     "error: alpha=0.5,0.7: Hydra reads the commas as several values to sweep over; add -m to run one job per value",
     DA_OUT, False),
    ("path-with-equals", MB, ("output={out}/a=b.csv", "n_people=3"), None,
     ("error: output={out}/a=b.csv: Hydra cannot read this value (mismatched input '=' expecting <EOF>); quote a value "
      "that holds = [ ] {{ }} ( ) , or spaces: \"output='{out}/a=b.csv'\""), (), False),
    ("path-with-a-bracket", TR, ("model={small}", "dataset={bios}", "model_dir={out}/lora[1]", "device=cpu"), None,
     ("error: model_dir={out}/lora[1]: Hydra cannot read this value (mismatched input '[' expecting <EOF>); quote a "
      "value that holds = [ ] {{ }} ( ) , or spaces: \"model_dir='{out}/lora[1]'\""), (), False),
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
    return {"small": small_model, "large": large_model, "word": word_model, "bios": bios, "dumps": dumps}


@pytest.mark.parametrize("rid, script, overrides, setup, expected, outputs, cli", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_error_line_exit_2_and_nothing_written(
    rid, script, overrides, setup, expected, outputs, cli, ctx, tmp_path, capsys
):
    w = tmp_path / "work"
    w.mkdir()
    if setup is not None:
        setup(w, ctx)
    before = _snapshot(w)
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
    assert _snapshot(w) == before  # the work folder, with the row's inputs: nothing created, changed or removed


def _snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (symlinks not followed) with the SHA-256 of each file's bytes."""
    seen = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            seen[str(path)] = "-> " + str(path.readlink())
        elif path.is_file():
            seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            seen[str(path)] = "folder"
    return seen


def test_the_matrix_covers_every_stage_and_twenty_inputs():
    assert len(ROWS) >= 20 and len({r[0] for r in ROWS}) == len(ROWS)
    assert {SA, CA, DA, TR, EV} <= {r[1] for r in ROWS}
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
