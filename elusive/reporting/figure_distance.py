"""Figure 1: closed-book accuracy against the distance, in tokens, from the person's name to the field.

For a prediction (person, field) the distance is

    d = (index of the first token of the field's span) − (index of the last token of the ``<name>`` span)

in the person's tag-free biography, tokenised by ``model``'s tokenizer (token character spans locate the
tags; the text is tokenised on its own, without a prefix). "Ann Lee was born in Oslo" has d = 4 for the
city: Lee is token 1, Oslo token 5. With ``make_biographies.py field_order=permuted`` every field appears at
many distances, which separates the distance from the type of the field.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from elusive.core.config import PlotAccuracyDistanceConfig, check
from elusive.core.errors import InputError
from elusive.core.files import atomic_path, sha256_file, write_text_atomic
from elusive.core.models import load_tokenizer
from elusive.core.outputs import check_outputs, suffixed
from elusive.text.data import read_csv
from elusive.text.tags import FIELDS, Span, parse_tagged
from elusive.text.tokens import Encoded, encode_many

log = logging.getLogger(__name__)

PREDICTION_KEYS = ("person", "field", "exact_match", "f1")


def _as_paths(value) -> list[Path]:
    """One path or a sequence of paths as a list of paths."""
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def read_predictions(predictions) -> list[dict]:
    """Read and pool ``predictions.jsonl`` files (or evaluation output folders holding one).

    Args:
        predictions: A path or a list of paths; a folder stands for its ``predictions.jsonl``.

    Returns:
        Every prediction (dict with at least person, field, exact_match, f1), files in the given order.

    Raises:
        InputError: A missing file, a line that is not JSON, a line without the needed keys, or no predictions.
    """
    paths = _as_paths(predictions)
    if not paths:
        raise InputError("predictions=[]: give at least one predictions.jsonl (or evaluate.py output_dir)")
    records: list[dict] = []
    for path in paths:
        file = path / "predictions.jsonl" if path.is_dir() else path
        if not file.is_file():
            raise InputError(f"predictions={path}: no such file; give evaluate.py's predictions.jsonl or its output_dir")
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"predictions={file}: line {number} is not JSON ({err.msg}); give evaluate.py's predictions.jsonl") from err
            missing = [k for k in PREDICTION_KEYS if not isinstance(record, dict) or k not in record]
            if missing:
                raise InputError(f"predictions={file}: line {number} has no {', '.join(missing)}; give evaluate.py's predictions.jsonl")
            records.append(record)
    if not records:
        raise InputError(f"predictions={', '.join(map(str, paths))}: no predictions in the file(s); run evaluate.py first")
    return records


def check_made_on(predictions, eval_data: Path) -> None:
    """Refuse an ``eval_data`` whose biographies are not those the predictions were made on.

    evaluate.py records the file it asked about and its SHA-256 (``eval_meta.json`` beside the predictions).
    Another file is fine if every person asked about has the very same tagged text in it (a superset, such as
    the full dataset a run took its first ``n_texts`` from); one with the same people but other facts or another
    field order (``make_biographies.py`` gives the same people for one seed whatever ``field_order``) would give
    every prediction a wrong distance without a word. When the recorded file is gone, the golds are still
    compared row by row (:func:`question_distances`).

    Raises:
        InputError: Naming the person whose text differs, the predictions and both files.
    """
    wanted = sha256_file(eval_data) if eval_data.is_file() else None
    given = None
    for path in _as_paths(predictions):
        meta = (path if path.is_dir() else path.parent) / "eval_meta.json"
        try:
            recorded = json.loads(meta.read_text(encoding="utf-8"))
            sha, source = recorded["eval_data_sha256"], Path(recorded["eval_data"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no record (predictions copied on their own): the golds are compared, row by row
        if not sha or not wanted or sha == wanted:
            continue
        if not source.is_file() or sha256_file(source) != sha:
            log.warning("predictions=%s were made on %s, which is gone or changed: only the golds are compared with "
                        "eval_data=%s", path, source, eval_data)
            continue
        given = given if given is not None else _texts_by_name(eval_data)
        theirs = _texts_by_name(source)
        people = {str(r["person"]).strip() for r in read_predictions(path)}
        for person in sorted(people):
            if person in theirs and person in given and theirs[person] != given[person]:
                raise InputError(
                    f"eval_data={eval_data}: {person}'s biography differs from the one predictions={path} were made on "
                    f"({source}: other facts or field order); give the eval_data the predictions were made on"
                )


def _texts_by_name(path: Path) -> dict[str, str]:
    """Each row's tagged text by the value of its (first) ``<name>`` tag."""
    out: dict[str, str] = {}
    for text in read_csv(path, "eval_data")["text"].tolist():
        names = [s.value.strip() for s in parse_tagged(text)[1] if s.field == "name"]
        if names:
            out.setdefault(names[0], text)
    return out


def distances_from_name(text: str, spans: list[Span], enc: Encoded) -> dict[str, int]:
    """Token distance from the end of the (first) ``name`` span to the start of every other (first) field span.

    Args:
        text: The tag-free text.
        spans: Its tagged spans (:func:`elusive.text.tags.parse_tagged`).
        enc: Its tokens (:func:`elusive.text.tokens.encode`); only text tokens (``ranked``) are used.

    Returns:
        ``{field: first token of the field − last token of the name}``; empty if the text has no name tag.
    """
    first: dict[str, Span] = {}
    for span in spans:
        first.setdefault(span.field, span)
    if "name" not in first:
        return {}
    idx = np.flatnonzero(enc.ranked)
    starts, ends = enc.char_spans[idx, 0], enc.char_spans[idx, 1]
    name = first["name"]
    before_end = idx[starts < name.end]
    name_last = int(before_end[-1]) if len(before_end) else 0
    out = {}
    for field, span in first.items():
        if field == "name":
            continue
        after = idx[ends > span.start]  # first token reaching into the field (BPE's " Oslo" starts at the space)
        out[field] = (int(after[0]) if len(after) else int(idx[-1]) + 1) - name_last
    return out


def _field_order(fields) -> list[str]:
    """Fields in the biography order (name, date, city, ...), unknown ones after, alphabetically."""
    return sorted(set(fields), key=lambda f: (FIELDS.index(f) if f in FIELDS else len(FIELDS), f))


def accuracy_by_distance(questions: pd.DataFrame, bin_size: int) -> pd.DataFrame:
    """Exact match and F1 per (field, distance bin), plus ``all`` (every field pooled) per bin.

    Args:
        questions: One row per prediction with columns field, distance, exact_match, f1.
        bin_size: Width of a bin in tokens; bin b covers distances ``[b*bin_size, (b+1)*bin_size)``.

    Returns:
        Columns field, bin_start, bin_end, n, exact_match, f1, mean_distance (fractions in [0, 1]).
    """
    q = questions.assign(bin_start=(questions["distance"] // bin_size) * bin_size)
    rows = []
    for field in [*_field_order(q["field"]), "all"]:
        sub = q if field == "all" else q[q["field"] == field]
        for start, group in sorted(sub.groupby("bin_start"), key=lambda item: item[0]):
            rows.append(
                {
                    "field": field,
                    "bin_start": int(start),
                    "bin_end": int(start) + bin_size,
                    "n": len(group),
                    "exact_match": float(group["exact_match"].mean()),
                    "f1": float(group["f1"].mean()),
                    "mean_distance": float(group["distance"].mean()),
                }
            )
    return pd.DataFrame(rows, columns=["field", "bin_start", "bin_end", "n", "exact_match", "f1", "mean_distance"])


def question_distances(records: list[dict], eval_data: Path, tokenizer, predictions_key: str = "predictions") -> pd.DataFrame:
    """The distance of every prediction's field from its person's name in ``eval_data``.

    Raises:
        InputError: A person not in ``eval_data`` (or named twice there), or a field not tagged in their biography.
    """
    frame = read_csv(eval_data, "eval_data")
    parsed = [parse_tagged(t) for t in frame["text"].tolist()]
    rows_of: dict[str, list[int]] = {}
    for row, (_, spans) in enumerate(parsed):
        names = [s.value.strip() for s in spans if s.field == "name"]
        if names:
            rows_of.setdefault(names[0], []).append(row)
    people = list(dict.fromkeys(str(r["person"]).strip() for r in records))
    for person in people:
        rows = rows_of.get(person, [])
        if not rows:
            raise InputError(
                f"{predictions_key}: person {person!r} is not a <name> in eval_data={eval_data}; "
                "give the eval_data the predictions were made on"
            )
        if len(rows) > 1:
            raise InputError(f"eval_data={eval_data}: {person!r} is the <name> of rows {rows}; the distance is ambiguous, keep one")
    used = [rows_of[p][0] for p in people]
    encoded = dict(zip(used, encode_many(tokenizer, [parsed[r][0] for r in used])))
    distances = {r: distances_from_name(parsed[r][0], parsed[r][1], encoded[r]) for r in used}
    out = []
    for record in records:
        person, field = str(record["person"]).strip(), str(record["field"])
        row = rows_of[person][0]
        if field == "name":
            raise InputError(f"{predictions_key}: field 'name' has no distance from the name; keep only questions about other fields")
        if field not in distances[row]:
            raise InputError(
                f"eval_data={eval_data}: row {row} ({person}) has no <{field}>...</{field}> tag, asked about in {predictions_key}; "
                "tag the field or use the eval_data the predictions were made on"
            )
        tagged = next(s.value.strip() for s in parsed[row][1] if s.field == field)
        gold = record.get("gold")
        if isinstance(gold, str) and gold.strip() != tagged:
            raise InputError(
                f"eval_data={eval_data}: row {row} gives {person} the {field} {tagged!r}, but {predictions_key} has the "
                f"gold {gold.strip()!r}; give the eval_data the predictions were made on"
            )
        out.append(
            {
                "person": person,
                "field": field,
                "distance": distances[row][field],
                "exact_match": float(record["exact_match"]),
                "f1": float(record["f1"]),
            }
        )
    return pd.DataFrame(out, columns=["person", "field", "distance", "exact_match", "f1"])


def distance_markdown(table: pd.DataFrame, questions: pd.DataFrame, bin_size: int) -> str:
    """Markdown: accuracy per field (with its mean distance), then per distance bin over all fields, in percent."""
    lines = [
        "### Accuracy by field",
        "",
        "| field | n | mean distance | exact match | F1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for field in _field_order(questions["field"]):
        sub = questions[questions["field"] == field]
        lines.append(
            f"| {field} | {len(sub)} | {sub['distance'].mean():.1f} | {100 * sub['exact_match'].mean():.1f} | {100 * sub['f1'].mean():.1f} |"
        )
    lines += [
        "",
        f"### Accuracy by distance from the name (bins of {bin_size} tokens, all fields)",
        "",
        "| distance | n | fields | exact match | F1 |",
        "|---|---:|---|---:|---:|",
    ]
    binned = questions.assign(bin_start=(questions["distance"] // bin_size) * bin_size)
    for row in table[table["field"] == "all"].itertuples():
        fields = binned[binned["bin_start"] == row.bin_start]["field"].value_counts()
        mix = ", ".join(f"{f} {fields[f]}" for f in _field_order(fields.index))
        lines.append(
            f"| {row.bin_start}–{row.bin_end - 1} | {row.n} | {mix} | {100 * row.exact_match:.1f} | {100 * row.f1:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot_accuracy_distance(table: pd.DataFrame, title: str, path) -> None:
    """EM (solid, markers) and F1 (dashed) against the mean distance of each bin; one colour per field."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = [f for f in dict.fromkeys(table["field"]) if f != "all"]
    fig, ax = plt.subplots(figsize=(7.4, 4.0))
    for i, field in enumerate([*fields, "all"]):
        sub = table[table["field"] == field]
        color = "black" if field == "all" else plt.cm.tab10(i % 10)
        width = 2.2 if field == "all" else 1.3
        x = sub["mean_distance"].to_numpy()
        ax.plot(x, 100 * sub["exact_match"].to_numpy(), "-o", color=color, lw=width, ms=4, label=f"{field} (n={sub['n'].sum()})")
        ax.plot(x, 100 * sub["f1"].to_numpy(), "--", color=color, lw=width * 0.8, alpha=0.8)
    ax.set_xlabel("distance from the name (tokens)")
    ax.set_ylabel("exact match % (solid), F1 % (dashed)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def accuracy_distance(cfg: PlotAccuracyDistanceConfig) -> str:
    """Write ``{output}.csv``, ``{output}.png`` and ``{output}.md``: accuracy per field and distance bin.

    Args:
        cfg: predictions (``predictions.jsonl`` of evaluate.py, its ``output_dir``, or a list of them, pooled),
            eval_data (the tagged CSV they were made on), model (the tokenizer that counts the tokens),
            output, bin_size (:class:`elusive.core.config.PlotAccuracyDistanceConfig`).

    Returns:
        The markdown tables (also written to ``{output}.md``).
    """
    check(cfg)
    predictions, eval_data, model, output, bin_size = cfg.predictions, cfg.eval_data, cfg.model, cfg.output, cfg.bin_size
    check_outputs("plot_accuracy_distance", suffixed("output", output, (".csv", ".md", ".png")),
                  {"predictions": [str(p) for p in _as_paths(predictions)], "eval_data": eval_data, "model": model})
    records = read_predictions(predictions)
    check_made_on(predictions, Path(eval_data))
    key = "predictions=" + ",".join(map(str, _as_paths(predictions)))
    tokenizer = load_tokenizer(model)
    questions = question_distances(records, Path(eval_data), tokenizer, key)
    table = accuracy_by_distance(questions, bin_size)
    markdown = distance_markdown(table, questions, bin_size)
    output = Path(output)
    with atomic_path(output.with_name(output.name + ".csv")) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n", float_format="%.6f")
    write_text_atomic(output.with_name(output.name + ".md"), markdown)
    title = f"Closed-book QA by distance from the name ({len(questions)} questions, {questions['person'].nunique()} people)"
    plot_accuracy_distance(table, title, output.with_name(output.name + ".png"))
    log.info("wrote %s.{csv,md,png}", output)
    return markdown
