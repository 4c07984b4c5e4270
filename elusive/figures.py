"""Figures of the paper: accuracy against distance from the name (Fig. 1), keep probability per token (Fig. 4).

**Figure 1** — closed-book accuracy against the distance, in tokens, between the person's name and the
field in the biography the model was trained on. For a prediction (person, field) the distance is

    d = (index of the first token of the field's span) − (index of the last token of the ``<name>`` span)

in the person's tag-free biography, tokenised by ``model``'s tokenizer (token character spans locate the
tags; the text is tokenised on its own, without a prefix). "Ann Lee was born in Oslo" has d = 4 for the
city: Lee is token 1, Oslo token 5. With ``make_biographies.py field_order=permuted`` every field appears at
many distances, which separates the distance from the type of the field.

**Figure 4** — each token's probability of being KEPT in an augmented copy, ``1 − p(r)``, for one
``augment_type`` of stage 3, computed with :mod:`elusive.augment`'s own functions: tokens that are never
dropped (special, ``text_prefix``, whitespace- or punctuation-only) have keep probability 1; ``random`` keeps
every droppable token with probability ``1 − alpha``; ``shuffled`` replays the random ranking that
``data_augmentation.py`` draws with the same ``seed`` and ``multiply``.
"""

from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from elusive.artifacts import atomic_path, sha256_file, write_text_atomic
from elusive.augment import (
    augment_text,
    drop_probabilities,
    droppable_tokens,
    load_scores,
    ranks_from_scores,
    shuffled_ranks,
    validate,
)
from elusive.data import load_texts, read_csv
from elusive.errors import InputError
from elusive.models import load_tokenizer
from elusive.tags import FIELDS, Span, parse_tagged
from elusive.tokens import Encoded, encode_many

log = logging.getLogger(__name__)

PREDICTION_KEYS = ("person", "field", "exact_match", "f1")
KEEP_COLOR = (0.698, 0.094, 0.169)  # #b2182b: the colour of keep probability 0 (white = keep probability 1)


# --------------------------------------------------------------------------------------------------
# Figure 1: accuracy against distance from the name
# --------------------------------------------------------------------------------------------------


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


def distances_from_name(text: str, spans: list[Span], enc: Encoded) -> dict[str, int]:
    """Token distance from the end of the (first) ``name`` span to the start of every other (first) field span.

    Args:
        text: The tag-free text.
        spans: Its tagged spans (:func:`elusive.tags.parse_tagged`).
        enc: Its tokens (:func:`elusive.tokens.encode`); only text tokens (``ranked``) are used.

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


def accuracy_distance(predictions, eval_data, model: str, output, bin_size: int = 10) -> str:
    """Write ``{output}.csv``, ``{output}.png`` and ``{output}.md``: accuracy per field and distance bin.

    Args:
        predictions: ``predictions.jsonl`` of evaluate.py, its ``output_dir``, or a list of them (pooled).
        eval_data: The tagged CSV the predictions were made on (the biographies the model was trained on).
        model: Tokenizer source (hub id, directory or .gguf) that counts the tokens.
        output: Output path without suffix.
        bin_size: Width of the distance bins in tokens, >= 1.

    Returns:
        The markdown tables (also written to ``{output}.md``).
    """
    if isinstance(bin_size, bool) or int(bin_size) != bin_size or bin_size < 1:
        raise InputError(f"bin_size={bin_size}: must be a whole number >= 1 (tokens per distance bin)")
    bin_size = int(bin_size)
    records = read_predictions(predictions)
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


# --------------------------------------------------------------------------------------------------
# Figure 4: keep probability of every token
# --------------------------------------------------------------------------------------------------


@dataclass
class KeepText:
    """One text with the keep probability of each of its tokens."""

    row: int
    text: str
    enc: Encoded
    scores: np.ndarray | None  # the dump's scores (None without a dump)
    rank: np.ndarray  # int64 per token, -1 = not ranked (never dropped, or augment_type=random)
    keep: np.ndarray  # float64 per token: 1 − p(r), 1 for tokens never dropped


def keep_probabilities(
    text: str, enc: Encoded, scores: np.ndarray | None, augment_type: str, alpha: float, beta: float,
    permutation: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank and keep probability ``1 − p(r)`` of every token of one text, as :func:`elusive.augment.augment_text` uses them.

    Args:
        text, enc: The tag-free text and its tokens.
        scores: Per-token scores aligned with ``enc`` (needed for ``attention`` and ``attention_diff``).
        augment_type: One of :data:`elusive.augment.AUGMENT_TYPES`.
        alpha, beta: The schedule p(r) = alpha * (1 - exp(-beta * r)).
        permutation: For ``shuffled``: the random ranks of the droppable tokens.

    Returns:
        ``(rank, keep)`` per token; rank −1 and keep 1 for tokens that are never dropped; rank −1 and keep
        ``1 − alpha`` for the droppable tokens of ``random``.
    """
    cand = droppable_tokens(text, enc)
    rank = np.full(len(enc.input_ids), -1, dtype=np.int64)
    keep = np.ones(len(enc.input_ids), dtype=np.float64)
    if augment_type == "random":
        keep[cand] = 1.0 - alpha
        return rank, keep
    if augment_type == "shuffled":
        ranks = np.asarray(permutation, dtype=np.int64)
    else:
        ranks = ranks_from_scores(scores[cand])
    rank[cand] = ranks
    keep[cand] = 1.0 - drop_probabilities(ranks, alpha, beta)
    return rank, keep


def shuffled_permutations(
    texts: list[str], encoded: list[Encoded], alpha: float, beta: float, multiply: int, seed: int, wanted: set[int]
) -> dict[int, np.ndarray]:
    """The random ranking ``data_augmentation(augment_type="shuffled", seed=seed, multiply=multiply)`` uses per text.

    The generator is shared by all texts, so text i's ranking depends on the texts before it: they are
    replayed through :func:`elusive.augment.augment_text` itself, which consumes the generator exactly as
    stage 3 does; the ranking is its first draw for each text (:func:`elusive.augment.shuffled_ranks`).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(max(wanted) + 1):
        if i in wanted:
            state = rng.bit_generator.state
            out[i] = shuffled_ranks(rng, len(droppable_tokens(texts[i], encoded[i])))
            rng.bit_generator.state = state
        augment_text(texts[i], encoded[i], None, "shuffled", alpha, beta, multiply, rng)
    return out


def _check_rows(rows, n_texts: int, dataset) -> list[int]:
    values = [rows] if isinstance(rows, (int, np.integer)) and not isinstance(rows, bool) else list(rows)
    shown = f"[{','.join(map(str, values))}]"
    if not values:
        raise InputError("rows=[]: give at least one row of the dataset, e.g. rows=[0,1,2]")
    for r in values:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < n_texts:
            raise InputError(f"rows={shown}: {r} is not a row of dataset={dataset} (0..{n_texts - 1})")
    return list(dict.fromkeys(int(r) for r in values))


def keep_texts(
    augment_type: str, alpha: float, beta: float, model: str, dataset, rows, attn_weights=None,
    seed: int = 0, multiply: int = 10, text_prefix: str = "",
) -> list[KeepText]:
    """Validate like stage 3 and compute the keep probability of every token of the chosen ``rows``."""
    validate(augment_type, alpha, beta, multiply, attn_weights)
    texts = load_texts(dataset, "dataset")
    chosen = _check_rows(rows, len(texts), dataset)
    tokenizer = load_tokenizer(model)
    dump = None
    if attn_weights is not None and augment_type != "random":
        dump, text_prefix = load_scores(Path(attn_weights), augment_type, Path(dataset), tokenizer, len(texts),
                                        sha256_file(dataset))
    # shuffled replays stage 3's generator through every text up to the last one shown
    needed = list(range(max(chosen) + 1)) if augment_type == "shuffled" else chosen
    encoded = dict(zip(needed, encode_many(tokenizer, [texts[i] for i in needed], text_prefix)))
    perms = {}
    if augment_type == "shuffled":
        perms = shuffled_permutations(texts, [encoded[i] for i in needed], alpha, beta, multiply, seed, set(chosen))
    out = []
    for i in chosen:
        enc = encoded[i]
        scores = None
        if dump is not None:
            scores = dump.scores[dump.text_slice(i)]
            if not np.array_equal(dump.input_ids[dump.text_slice(i)], enc.input_ids):
                raise InputError(
                    f"attn_weights={attn_weights}: text {i} was tokenised differently than model={model} does now; "
                    "extract the dump with the same tokenizer"
                )
        rank, keep = keep_probabilities(texts[i], enc, scores, augment_type, alpha, beta, perms.get(i))
        out.append(KeepText(i, texts[i], enc, scores, rank, keep))
    return out


def keep_color(keep: float) -> tuple[float, float, float]:
    """White for keep probability 1, :data:`KEEP_COLOR` for 0, linear in between."""
    k = min(max(float(keep), 0.0), 1.0)
    return tuple(k + (1.0 - k) * c for c in KEEP_COLOR)


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


def _pieces(item: KeepText) -> list[tuple[str, int | None]]:
    """The text cut into (characters, token index or None for characters no token covers), in order."""
    pieces: list[tuple[str, int | None]] = []
    pos = 0
    for t in np.flatnonzero(item.enc.ranked):
        start, end = (int(v) for v in item.enc.char_spans[t])
        start = max(start, pos)  # byte-level pieces of one character share its span: show it once
        if end <= start:
            continue
        if start > pos:
            pieces.append((item.text[pos:start], None))
        pieces.append((item.text[start:end], int(t)))
        pos = end
    if pos < len(item.text):
        pieces.append((item.text[pos:], None))
    return pieces


def _describe(augment_type: str, alpha: float, beta: float) -> str:
    if augment_type == "random":
        return f"augment_type=random, alpha={alpha:g}: every droppable token kept with probability {1 - alpha:g}"
    return f"augment_type={augment_type}, alpha={alpha:g}, beta={beta:g}: keep = 1 − alpha·(1 − e^(−beta·r))"


def keep_html(items: list[KeepText], augment_type: str, alpha: float, beta: float) -> str:
    """A standalone HTML page: each text as inline token spans shaded by keep probability, with a legend."""
    esc = html.escape
    title = f"Keep probability per token — {_describe(augment_type, alpha, beta)}"
    stops = [1.0, 0.75, 0.5, 0.25, 0.0]
    legend = " ".join(
        f'<span class="tok" style="background:{_hex(keep_color(k))};color:{"#fff" if k < 0.25 else "#000"}">keep {k:.2f}</span>'
        for k in stops
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>",
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.9}",
        ".text{white-space:pre-wrap;font-family:monospace;font-size:15px}",
        ".tok{padding:1px 0;border-radius:2px}",
        ".legend{font-size:13px}",
        ".legend .tok{border:1px solid #bbb;padding:1px 4px}",
        "</style>",
        "</head>",
        "<body>",
        f"<h1 style=\"font-size:1.2em\">{esc(title)}</h1>",
        f'<p class="legend">Legend: {legend}. White: always kept (rank 0, punctuation, whitespace, special or prefix '
        "tokens). Hover a token for its rank r (0 = highest score) and keep probability.</p>",
    ]
    for item in items:
        spans = []
        for chars, t in _pieces(item):
            if t is None:
                spans.append(esc(chars))
                continue
            keep, rank = float(item.keep[t]), int(item.rank[t])
            tip = f"token {t}: {chars!r} | rank {rank if rank >= 0 else '-'} | keep {keep:.3f}"
            if item.scores is not None:
                tip += f" | score {float(item.scores[t]):.4g}"
            style = f"background:{_hex(keep_color(keep))}" + (";color:#fff" if keep < 0.25 else "")
            spans.append(f'<span class="tok" style="{style}" title="{esc(tip, quote=True)}">{esc(chars)}</span>')
        parts.append(f"<h2 style=\"font-size:1em\">row {item.row}</h2>")
        parts.append(f'<p class="text">{"".join(spans)}</p>')
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def keep_table(items: list[KeepText]) -> pd.DataFrame:
    """One CSV row per text token: row, token_index, token_text, score, rank, keep_probability."""
    rows = []
    for item in items:
        for t in np.flatnonzero(item.enc.ranked):
            start, end = (int(v) for v in item.enc.char_spans[t])
            rows.append(
                {
                    "row": item.row,
                    "token_index": int(t),
                    "token_text": item.text[start:end],
                    "score": float(item.scores[t]) if item.scores is not None else float("nan"),
                    "rank": int(item.rank[t]) if item.rank[t] >= 0 else None,
                    "keep_probability": float(item.keep[t]),
                }
            )
    frame = pd.DataFrame(rows, columns=["row", "token_index", "token_text", "score", "rank", "keep_probability"])
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


def _layout(items: list[KeepText], width: int) -> list[list[tuple[int, str, float | None]]]:
    """Lines of (column, characters, keep or None for plain text): a heading per text, then its tokens.

    Lines break only where the text has whitespace (never inside a word or before its punctuation), at
    ``width`` characters; the text's own newlines start a new line; spaces at the start of a line are not drawn.
    """
    lines: list[list[tuple[int, str, float | None]]] = []
    for n, item in enumerate(items):
        if n:
            lines.append([])
        lines.append([(0, f"row {item.row}", None)])
        # words: runs of pieces up to the next piece that starts with whitespace; None marks a newline
        words: list[list[tuple[str, float | None]] | None] = [[]]
        for chars, t in _pieces(item):
            keep = None if t is None else float(item.keep[t])
            for k, segment in enumerate(chars.split("\n")):
                if k:
                    words += [None, []]
                if not segment:
                    continue
                if segment[0].isspace() and words[-1]:
                    words.append([])
                words[-1].append((segment, keep))
        line: list[tuple[int, str, float | None]] = []
        col = 0
        for word in words:
            if word is None or (word and col > 0 and col + sum(len(c) for c, _ in word) > width):
                lines.append(line)
                line, col = [], 0
            for segment, keep in word or []:
                if col == 0:
                    segment = segment.lstrip()
                    if not segment:
                        continue
                line.append((col, segment, keep))
                col += len(segment)
        lines.append(line)
    return lines


def plot_keep(items: list[KeepText], title: str, path, width: int = 90, fontsize: float = 9.0) -> None:
    """The texts as rows of coloured token boxes (monospace, wrapped), with a colour bar of the keep probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.patches import Rectangle

    lines = _layout(items, width)
    char_in = 0.602 * fontsize / 72  # advance width of DejaVu Sans Mono, in inches
    line_in = 1.75 * fontsize / 72
    margin = 0.3
    fig_w = width * char_in + 2 * margin
    text_h = len(lines) * line_in
    fig_h = text_h + 1.6
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((margin / fig_w, 0.95 / fig_h, width * char_in / fig_w, text_h / fig_h))
    ax.set_xlim(0, width)
    ax.set_ylim(len(lines), 0)
    ax.axis("off")
    for y, line in enumerate(lines):
        for col, chars, keep in line:
            bold = keep is None and chars.startswith("row ") and col == 0 and (y == 0 or not lines[y - 1])
            if keep is not None:
                ax.add_patch(
                    Rectangle((col, y + 0.08), len(chars), 0.84, facecolor=keep_color(keep), edgecolor="0.85", linewidth=0.3)
                )
            color = "white" if keep is not None and keep < 0.25 else "black"
            ax.text(col, y + 0.5, chars, family="DejaVu Sans Mono", fontsize=fontsize, va="center", ha="left",
                    color=color, fontweight="bold" if bold else "normal", parse_math=False)
    fig.suptitle(title, fontsize=fontsize + 1, y=1 - 0.12 / fig_h, va="top")
    cax = fig.add_axes((0.25, 0.5 / fig_h, 0.5, 0.15 / fig_h))
    cmap = LinearSegmentedColormap.from_list("keep", [KEEP_COLOR, (1.0, 1.0, 1.0)])
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=cmap), cax=cax, orientation="horizontal")
    bar.set_label("keep probability 1 − p(r)", fontsize=fontsize - 1)
    bar.ax.tick_params(labelsize=fontsize - 1)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def keep_probability(
    augment_type: str, alpha: float, beta: float, model: str, dataset, output, rows=(0, 1, 2),
    attn_weights=None, seed: int = 0, multiply: int = 10, text_prefix: str = "",
) -> list[Path]:
    """Write ``{output}.html``, ``{output}.png`` and ``{output}.csv``: each token's keep probability 1 − p(r).

    Args:
        augment_type: ``random``, ``attention``, ``attention_diff`` or ``shuffled`` (as in data_augmentation).
        alpha, beta: The drop schedule of stage 3.
        model: Tokenizer source; must be the dump's tokenizer.
        dataset: The CSV the dump was computed on.
        output: Output path without suffix.
        rows: Row indices of the texts to show (an int or a list).
        attn_weights: The dump ranking the tokens (needed for attention and attention_diff).
        seed, multiply: For ``shuffled``: the data_augmentation settings whose random ranking is shown.
        text_prefix: Prefix used for tokenising when no dump is given (a dump's own prefix wins).

    Returns:
        The three files written.
    """
    items = keep_texts(augment_type, alpha, beta, model, dataset, rows, attn_weights, seed, multiply, text_prefix)
    page = keep_html(items, augment_type, alpha, beta)
    table = keep_table(items)
    output = Path(output)
    paths = [output.with_name(output.name + suffix) for suffix in (".html", ".png", ".csv")]
    write_text_atomic(paths[0], page)
    title = f"Keep probability per token, augment_type={augment_type}, α={alpha:g}"
    title += "" if augment_type == "random" else f", β={beta:g}"
    title += f" (seed={seed}, multiply={multiply})" if augment_type == "shuffled" else ""
    plot_keep(items, title, paths[1])
    with atomic_path(paths[2]) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n", float_format="%.6f")
    log.info("wrote %s.{html,png,csv}: rows %s", output, [item.row for item in items])
    return paths

