"""Artifact formats: round trips, atomic writes, and refusing files that are not what they claim."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from elusive.attention.dump import AttentionDump, canonical_safetensors, dump_path
from elusive.core.errors import InputError
from elusive.core.files import atomic_path
from elusive.text.tags import parse_tagged, tag_problem


def _dump():
    return AttentionDump(
        scores=np.array([0.5, 0.25, 0.1, 0.9, 0.3], dtype=np.float32),
        offsets=np.array([0, 3, 5]),
        input_ids=np.array([7, 8, 9, 7, 10]),
        char_spans=np.array([[0, 3], [3, 6], [6, 7], [0, 2], [2, 5]]),
        ranked=np.array([True, True, False, True, True]),
        metadata={"kind": "attention", "model": "m", "b": "2", "a": "1"},
    )


def test_dump_round_trip_and_suffix(tmp_path):
    path = _dump().save(tmp_path / "d")
    assert path == dump_path(tmp_path / "d") == tmp_path / "d.safetensors"
    back = AttentionDump.load(tmp_path / "d.safetensors")
    np.testing.assert_array_equal(back.scores, _dump().scores)
    np.testing.assert_array_equal(back.ranked, _dump().ranked)
    assert back.n_texts == 2 and back.text_slice(1) == slice(3, 5)
    assert back.metadata["model"] == "m" and back.metadata["format"] == "elusive-attention/1"


def test_canonical_header_is_byte_stable_and_readable(tmp_path):
    a = _dump().save(tmp_path / "a").read_bytes()
    b = _dump().save(tmp_path / "b").read_bytes()
    assert a == b and canonical_safetensors(a) == a
    assert int.from_bytes(a[:8], "little") % 8 == 0


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists() and not (tmp_path / "sub").exists()  # the folder made for it went too
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o027, 0o077])
def test_atomic_path_gives_the_mode_a_plain_open_would(tmp_path, mask):
    """mkstemp creates 0600; the file written gets 0666 minus the umask, as open() would give it (0600 only
    under umask 077)."""
    before = os.umask(mask)
    try:
        with atomic_path(tmp_path / "written.txt") as tmp:
            tmp.write_text("x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(before)
    mode = (tmp_path / "written.txt").stat().st_mode & 0o777
    assert mode == 0o666 & ~mask == (tmp_path / "plain.txt").stat().st_mode & 0o777, oct(mode)


def test_loading_something_else_is_a_clear_error(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="attn_weights=.*junk"):
        AttentionDump.load(tmp_path / "junk")
    with pytest.raises(InputError, match="no attention dump"):
        AttentionDump.load(tmp_path / "absent")


def test_parse_tagged_locates_fields_in_plain_text():
    plain, spans = parse_tagged("<name>Ann Lee</name> was born in <city>Oslo</city>. She worked at <company>the BBC</company>.")
    assert plain == "Ann Lee was born in Oslo. She worked at the BBC."
    assert [(s.field, s.value, plain[s.start : s.end]) for s in spans] == [
        ("name", "Ann Lee", "Ann Lee"), ("city", "Oslo", "Oslo"), ("company", "the BBC", "the BBC")]


def test_dump_header_records_the_sha256_of_its_tensor_bytes(tmp_path):
    raw = _dump().save(tmp_path / "d").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert header["__metadata__"]["data_sha256"] == hashlib.sha256(raw[8 + n :]).hexdigest()
    altered = bytearray(raw)
    altered[-1] ^= 0x80  # the last byte of the last tensor: still a well-formed file
    (tmp_path / "e.safetensors").write_bytes(bytes(altered))
    with pytest.raises(InputError, match=r"attn_weights=.*e\.safetensors: its tensor bytes do not match the SHA-256"):
        AttentionDump.load(tmp_path / "e")
    (tmp_path / "f.safetensors").write_bytes(raw[:-8])
    with pytest.raises(InputError, match=r"f\.safetensors: not a readable safetensors file .*truncated or damaged"):
        AttentionDump.load(tmp_path / "f")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("<name>Ann</name> in <city>Oslo</city>.", None),
        ("a < b and c > d", None),  # not tags
        ("<name>Ann</name> in <city>Oslo.", "<city> is never closed"),
        ("<name>Ann</city>", "</city> closes a tag that is not open (<name> is)"),
        ("Oslo</city>", "</city> closes a tag that is not open"),
        ("<name>Ann <city>Oslo</city></name>", "<city> opens before </name> closes <name>"),
        ("<Name>Ann</Name>", "unknown tag <Name> (known: name, date, city, university, major, company)"),
    ],
)
def test_tag_problems_are_named(text, problem):
    assert tag_problem(text) == problem


def test_the_well_tagged_fast_path_agrees_with_the_tag_by_tag_check():
    """tag_problem first asks one regex whether the text is well tagged; on random texts built from tag
    pieces, that regex says yes exactly when the tag-by-tag loop finds no problem."""
    from elusive.text.tags import _WELL_TAGGED_RE, _first_tag_problem

    pieces = ["<name>", "</name>", "<city>", "</city>", "<Name>", "</x>", "<", ">", "</", "a", " ", "\n", "<<city>",
              "<c ity>", "<_a>", "</city >"]
    rng = np.random.default_rng(0)
    agreed = {True: 0, False: 0}
    for _ in range(20000):
        text = "".join(rng.choice(pieces, rng.integers(0, 9)))
        well = _WELL_TAGGED_RE.fullmatch(text) is not None
        assert well == (_first_tag_problem(text) is None), text
        agreed[well] += 1
    assert min(agreed.values()) > 1000  # both answers were tested often
