"""Which tokens does a model attend to just before a field? Top-k shares per field, with a positional control.

Reads a focus dump (``save_attention.py focus=true``, or its contrast): for each biography and each field,
the attention row of the token just before the field (e.g. " at" before the company). The query's own
token, special and prefix tokens and, as in the paper's figures (its footnote 2), punctuation- and
whitespace-only tokens are left out (``include_punctuation=true`` keeps them); the k keys with the largest
attention (or attention difference) are ranked 1..k and each is labelled with the tagged field it belongs to,
or ``other``.

The control: the difference of two models may favour *distant* tokens rather than *name* tokens. For each
rank, the position-matched baseline is the share of each label among tokens at the same distance from the
query, over all biographies with the same query field — what the shares would be if only distance mattered.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from elusive.attention.dump import AttentionDump, dump_path
from elusive.core.config import AnalyzeAttentionConfig, check
from elusive.core.errors import InputError
from elusive.core.files import atomic_path, write_text_atomic
from elusive.core.models import load_tokenizer
from elusive.core.outputs import check_outputs, suffixed
from elusive.text.tokens import is_droppable

log = logging.getLogger(__name__)


@dataclass
class FocusEntry:
    """One (text, field) query: ranked key tokens, their labels and their distances from the query."""

    text: int
    field: str
    top: np.ndarray  # token indices within the text, best first
    labels: list[str]  # label of each top token
    distances: np.ndarray  # query index − key index of each top token
    label_at_distance: dict[int, str]  # label of every candidate key by distance (for the baseline)


def focus_entries(dump: AttentionDump, k: int = 10, allowed: np.ndarray | None = None) -> list[FocusEntry]:
    """Rank the keys of every focus row of ``dump`` (see the module docstring).

    Args:
        allowed: Per token of the dump, whether it may be ranked (default: the text's own tokens); the
            position-matched control uses the same tokens.
    """
    if "focus_rows" not in dump.extra:
        raise ValueError("the dump has no focus rows; run save_attention.py with focus=true")
    fields = json.loads(dump.metadata.get("fields", "[]"))
    extra = dump.extra
    entries = []
    for f in range(len(extra["focus_text"])):
        t, q = int(extra["focus_text"][f]), int(extra["focus_query"][f])
        row = extra["focus_rows"][extra["focus_offsets"][f] : extra["focus_offsets"][f + 1]]
        sl = dump.text_slice(t)
        ranked = (dump.ranked if allowed is None else allowed)[sl][:q]  # keys before the query
        token_field = extra["token_field"][sl]
        cand = np.flatnonzero(ranked)
        order = cand[np.argsort(-row[cand], kind="stable")][:k]
        label = {j: (fields[token_field[j]] if token_field[j] >= 0 else "other") for j in cand}
        entries.append(
            FocusEntry(
                text=t,
                field=fields[int(extra["focus_field"][f])],
                top=order,
                labels=[label[j] for j in order],
                distances=q - order,
                label_at_distance={int(q - j): label[j] for j in cand},
            )
        )
    return entries


def rankable(dump: AttentionDump, tokenizer, include_punctuation: bool = False) -> np.ndarray:
    """Which tokens the figure may rank: the paper's footnote 2 leaves out periods, commas, spaces and
    placeholders, so by default only text tokens with a word character (:func:`elusive.text.tokens.is_droppable`,
    stage 3's rule); ``include_punctuation`` keeps every token, special ones included."""
    if include_punctuation:
        return np.ones(len(dump.input_ids), dtype=bool)
    ids, inverse = np.unique(dump.input_ids, return_inverse=True)
    words = np.array([is_droppable(tokenizer.decode([int(i)])) for i in ids], dtype=bool)
    return dump.ranked & words[inverse.reshape(-1)]


def field_shares(entries: list[FocusEntry], k: int = 10) -> dict[str, dict[str, np.ndarray]]:
    """Per query field: observed and position-matched share of each label at ranks 1..k, and 'in top k'.

    Returns:
        ``{query_field: {"labels": [...], "share": [k, L], "baseline": [k, L], "in_top": [L],
        "in_top_baseline": [L], "n": n}}``.
    """
    out: dict[str, dict] = {}
    for qfield in dict.fromkeys(e.field for e in entries):
        group = [e for e in entries if e.field == qfield]
        labels = sorted({lab for e in group for lab in e.label_at_distance.values()}, key=lambda x: (x == "other", x))
        index = {lab: i for i, lab in enumerate(labels)}
        # P(label | distance) over this field's queries
        by_distance: dict[int, Counter] = {}
        for e in group:
            for d, lab in e.label_at_distance.items():
                by_distance.setdefault(d, Counter())[lab] += 1
        prob = {d: np.array([c[lab] for lab in labels], dtype=float) / sum(c.values()) for d, c in by_distance.items()}
        share = np.zeros((k, len(labels)))
        baseline = np.zeros((k, len(labels)))
        counts = np.zeros(k)
        in_top = np.zeros(len(labels))
        in_top_base = np.zeros(len(labels))
        for e in group:
            none_yet = np.ones(len(labels))
            for r, (lab, d) in enumerate(zip(e.labels, e.distances)):
                share[r, index[lab]] += 1
                baseline[r] += prob[int(d)]
                counts[r] += 1
                none_yet *= 1 - prob[int(d)]
            in_top += np.array([lab in e.labels for lab in labels], dtype=float)
            in_top_base += 1 - none_yet
        counts = np.maximum(counts, 1)[:, None]
        out[qfield] = {
            "labels": labels,
            "share": share / counts,
            "baseline": baseline / counts,
            "in_top": in_top / len(group),
            "in_top_baseline": in_top_base / len(group),
            "n": len(group),
        }
    return out


def frequent_tokens(entries: list[FocusEntry], dump: AttentionDump, tokenizer, field: str, n: int = 10) -> list[tuple[str, int]]:
    """The ``n`` token strings most often in the top-k before ``field``, with counts."""
    counter: Counter = Counter()
    for e in entries:
        if e.field == field:
            ids = dump.input_ids[dump.text_slice(e.text)][e.top]
            counter.update(tokenizer.convert_ids_to_tokens(ids.tolist()))
    return counter.most_common(n)


def shares_table(shares: dict[str, dict], title: str) -> str:
    """Markdown: per query field, % of biographies with each label in the top k, observed vs. position-matched."""
    lines = [f"### {title}", "", "| before field | n | " + " | ".join(["label: in top-k % (position-matched %)"]) + " |", "|---|---:|---|"]
    for qfield, s in shares.items():
        cells = ", ".join(
            f"{lab} {100 * s['in_top'][i]:.0f} ({100 * s['in_top_baseline'][i]:.0f})" for i, lab in enumerate(s["labels"])
        )
        lines.append(f"| {qfield} | {s['n']} | {cells} |")
    return "\n".join(lines)


def analyze_attention(cfg: AnalyzeAttentionConfig) -> str:
    """Write ``{output}.csv`` (shares per field/rank/label), ``{output}.png`` and ``{output}.md``; return the markdown.

    Args:
        cfg: attn_dump (a focus dump of save_attention.py focus=true, or a contrast of two), output, model (the
            tokenizer for printing tokens), k, include_punctuation (:class:`elusive.core.config.AnalyzeAttentionConfig`).
    """
    check(cfg)
    attn_dump, output, model, k = cfg.attn_dump, cfg.output, cfg.model, cfg.k
    check_outputs("analyze_attention", suffixed("output", output, (".csv", ".md", ".png")),
                  {"attn_dump": dump_path(attn_dump), "model": model})
    dump = AttentionDump.load(attn_dump, "attn_dump")
    if "focus_rows" not in dump.extra:
        raise InputError(f"attn_dump={attn_dump}: has no focus rows; rerun save_attention.py with focus=true (both models for a contrast)")
    if k < 1:
        raise InputError(f"k={k}: must be >= 1")
    tokenizer = load_tokenizer(model or dump.metadata.get("tokenizer", ""))
    entries = focus_entries(dump, k, rankable(dump, tokenizer, cfg.include_punctuation))
    shares = field_shares(entries, k)
    kind = dump.metadata.get("kind", "attention")
    if kind == "attention_diff":
        models = json.loads(dump.metadata.get("model", "{}"))
        name = lambda m: Path(str(m)).name  # noqa: E731
        title = f"Top-{k} tokens by attention difference ({name(models.get('large'))} − {name(models.get('small'))}) before each field"
    else:
        title = f"Top-{k} tokens by attention of {Path(dump.metadata.get('model', '')).name} before each field"
    lines = [shares_table(shares, title), "", "Most frequent top-k tokens before each field:", ""]
    for qfield in shares:
        tokens = ", ".join(f"{tok!r}×{n}" for tok, n in frequent_tokens(entries, dump, tokenizer, qfield))
        lines.append(f"- {qfield}: {tokens}")
    markdown = "\n".join(lines) + "\n"
    rows = [
        {"before_field": q, "rank": r + 1, "label": lab, "share": s["share"][r, i], "position_matched": s["baseline"][r, i], "n": s["n"]}
        for q, s in shares.items()
        for r in range(k)
        for i, lab in enumerate(s["labels"])
    ]
    rows += [
        {"before_field": q, "rank": "top", "label": lab, "share": s["in_top"][i], "position_matched": s["in_top_baseline"][i], "n": s["n"]}
        for q, s in shares.items()
        for i, lab in enumerate(s["labels"])
    ]
    output = Path(output)
    with atomic_path(output.with_name(output.name + ".csv")) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, lineterminator="\n", float_format="%.6f")
    write_text_atomic(output.with_name(output.name + ".md"), markdown)
    plot_shares(shares, title, output.with_name(output.name + ".png"))
    log.info("wrote %s.{csv,md,png} (%s)", output, json.dumps({q: s["n"] for q, s in shares.items()}))
    return markdown


def plot_shares(shares: dict[str, dict], title: str, path) -> None:
    """One panel per query field: stacked bars of label shares per rank, position-matched shares as dots."""
    import matplotlib

    matplotlib.use("Agg")  # no display: set before pyplot is imported, so kept local
    import matplotlib.pyplot as plt

    labels = sorted({lab for s in shares.values() for lab in s["labels"]}, key=lambda x: (x == "other", x))
    colors = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    fig, axes = plt.subplots(1, len(shares), figsize=(3.2 * len(shares), 3.4), sharey=True, squeeze=False)
    for ax, (qfield, s) in zip(axes[0], shares.items()):
        ranks = np.arange(1, s["share"].shape[0] + 1)
        bottom = np.zeros(len(ranks))
        for i, lab in enumerate(s["labels"]):
            ax.bar(ranks, s["share"][:, i], bottom=bottom, color=colors[lab], label=lab, width=0.8)
            ax.plot(ranks, bottom + s["baseline"][:, i], "k.", markersize=3)
            bottom += s["share"][:, i]
        ax.set_title(f"before {qfield} (n={s['n']})", fontsize=9)
        ax.set_xlabel("rank")
    axes[0][0].set_ylabel("share of tokens (dots: position-matched)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[lab]) for lab in labels]
    fig.legend(handles, labels, loc="upper right", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.92, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
