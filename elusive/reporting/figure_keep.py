"""Figure 4: each token's probability of being KEPT in an augmented copy, ``1 − p(r)``, for one augmentation.

The ranks and probabilities come from :func:`elusive.augment.stage.drop_plan`, the function stage 3 itself uses,
on the tokens and scores stage 3 would use (the dump's own tokens, or the tokenizer's; a word-level contrast
projected onto the tokens): tokens that are never dropped (special, ``text_prefix``, whitespace- or
punctuation-only) have keep probability 1; ``random`` keeps every droppable token with probability
``1 − alpha``; ``shuffled`` shows the ranking ``data_augmentation.py`` draws for that text with the same seed.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from elusive.attention.dump import dump_path
from elusive.core.config import PlotKeepProbabilityConfig, check
from elusive.core.errors import InputError
from elusive.core.files import atomic_path, write_text_atomic
from elusive.core.outputs import check_outputs, suffixed
from elusive.text.tokens import Encoded

log = logging.getLogger(__name__)

KEEP_COLOR = (0.698, 0.094, 0.169)  # #b2182b: the colour of keep probability 0 (white = keep probability 1)


@dataclass
class KeepText:
    """One text with the keep probability of each of its tokens."""

    row: int
    text: str
    enc: Encoded
    scores: np.ndarray | None  # the dump's scores (None without a dump)
    rank: np.ndarray  # int64 per token, -1 = not ranked (never dropped, or augment_type=random)
    keep: np.ndarray  # float64 per token: 1 − p(r), 1 for tokens never dropped


def _check_rows(rows, n_texts: int, dataset) -> list[int]:
    values = [rows] if isinstance(rows, (int, np.integer)) and not isinstance(rows, bool) else list(rows)
    shown = f"[{','.join(map(str, values))}]"
    if not values:
        raise InputError("rows=[]: give at least one row of the dataset, e.g. rows=[0,1,2]")
    for r in values:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < n_texts:
            raise InputError(f"rows={shown}: {r} is not a row of dataset={dataset} (0..{n_texts - 1})")
    return list(dict.fromkeys(int(r) for r in values))


def keep_texts(cfg: PlotKeepProbabilityConfig) -> list[KeepText]:
    """The keep probability of every token of the chosen rows, from stage 3's own inputs and drop plan."""
    from elusive.augment.inputs import ranking_inputs
    from elusive.augment.stage import DropSettings, batch_slice, drop_plan

    texts, batch, scores, dump = ranking_inputs(cfg.augment_type, cfg.model, Path(cfg.dataset),
                                                None if cfg.attn_weights is None else Path(cfg.attn_weights),
                                                cfg.text_prefix)
    released = dump is not None and dump.metadata.get("aggregate") == "released"
    settings = DropSettings(cfg.augment_type, cfg.alpha, cfg.beta, cfg.seed, released, cfg.released_ties)
    out = []
    for i in _check_rows(cfg.rows, len(texts), cfg.dataset):
        tokens = slice(int(batch.offsets[i]), int(batch.offsets[i + 1]))
        part = batch_slice(batch, i, i + 1)
        text_scores = None if scores is None else scores[tokens]
        plan = drop_plan([texts[i]], part, text_scores, settings, first_text=i)
        rank = np.full(len(part.input_ids), -1, dtype=np.int64)
        keep = np.ones(len(part.input_ids), dtype=np.float64)
        if cfg.augment_type != "random":
            rank[plan.candidates] = plan.ranks
        keep[plan.candidates] = 1.0 - plan.p
        out.append(KeepText(i, texts[i], part[0], text_scores, rank, keep))
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


def keep_probability(cfg: PlotKeepProbabilityConfig) -> list[Path]:
    """Write ``{output}.html``, ``{output}.png`` and ``{output}.csv``: each token's keep probability 1 − p(r).

    Args:
        cfg: The augmentation shown (augment_type, alpha, beta, attn_weights, seed: as data_augmentation.py), the
            tokenizer and dataset, the rows and the output (:class:`elusive.core.config.PlotKeepProbabilityConfig`).

    Returns:
        The three files written.
    """
    check(cfg)
    augment_type, alpha, beta, seed, output = cfg.augment_type, cfg.alpha, cfg.beta, cfg.seed, cfg.output
    check_outputs("plot_keep_probability", suffixed("output", output, (".html", ".png", ".csv")),
                  {"attn_weights": None if cfg.attn_weights is None else dump_path(cfg.attn_weights),
                   "dataset": cfg.dataset, "model": cfg.model})
    items = keep_texts(cfg)
    page = keep_html(items, augment_type, alpha, beta)
    table = keep_table(items)
    output = Path(output)
    paths = [output.with_name(output.name + suffix) for suffix in (".html", ".png", ".csv")]
    write_text_atomic(paths[0], page)
    title = f"Keep probability per token, augment_type={augment_type}, α={alpha:g}"
    title += "" if augment_type == "random" else f", β={beta:g}"
    title += f" (seed={seed})" if augment_type == "shuffled" else ""
    plot_keep(items, title, paths[1])
    with atomic_path(paths[2]) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n", float_format="%.6f")
    log.info("wrote %s.{html,png,csv}: rows %s", output, [item.row for item in items])
    return paths
