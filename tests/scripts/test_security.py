"""No pickle anywhere: the project's Python never imports a pickle module, never calls ``torch.load`` without
``weights_only=True``, never trusts remote code; resuming training reads checkpoints with ``weights_only=True``.

Model files from the package registry are checked by SHA-256 before use; that is tested in
tests/core/test_offline_models.py (a chunk whose bytes differ from its RECORD hash, a bad zip CRC and an assembled
file that differs from the pinned hash are refused and leave nothing behind).
"""

from __future__ import annotations

import ast
from pathlib import Path

import torch
from helpers.run import ROOT
from helpers.stages import train

PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}
PICKLE_CALLS = {"read_pickle", "to_pickle"}  # pandas


def _is_true(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def findings(source: str, name: str = "<source>") -> list[str]:
    """Every unsafe loading construct in ``source``, as ``name:line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [(node.module or "").split(".")[0]]
        else:
            modules = []
        found += [f"{name}:{node.lineno}: imports {m}" for m in modules if m in PICKLE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        func = node.func
        attr = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        if owner == "torch" and attr == "load" and not _is_true(keywords.get("weights_only")):
            found.append(f"{name}:{node.lineno}: torch.load without weights_only=True")
        if _is_true(keywords.get("trust_remote_code")):
            found.append(f"{name}:{node.lineno}: trust_remote_code=True")
        if _is_true(keywords.get("allow_pickle")):
            found.append(f"{name}:{node.lineno}: allow_pickle=True")
        if attr in PICKLE_CALLS:
            found.append(f"{name}:{node.lineno}: {attr}")
    return found


def project_files() -> list[Path]:
    """The project's own Python: top-level scripts, the package, scripts/, bench/ and the tests."""
    files = [*ROOT.glob("*.py")]
    for folder in ("elusive", "scripts", "bench", "tests"):
        files += (ROOT / folder).rglob("*.py")
    return sorted(files)


def test_the_scanner_finds_each_unsafe_construct():
    source = (
        "import pickle\nfrom joblib import load\nimport torch\nimport numpy as np\n"
        "torch.load('a.pt')\ntorch.load('a.pt', weights_only=False)\ntorch.load('a.pt', weights_only=True)\n"
        "AutoModel.from_pretrained('x', trust_remote_code=True)\nnp.load('a.npy', allow_pickle=True)\n"
        "pd.read_pickle('f')\n"
    )
    assert findings(source) == [
        "<source>:1: imports pickle", "<source>:2: imports joblib", "<source>:5: torch.load without weights_only=True",
        "<source>:6: torch.load without weights_only=True", "<source>:8: trust_remote_code=True",
        "<source>:9: allow_pickle=True", "<source>:10: read_pickle",
    ]


def test_no_project_file_loads_pickle_or_remote_code():
    files = project_files()
    assert ROOT / "elusive" / "training" / "stage.py" in files and ROOT / "train.py" in files and len(files) > 40
    problems = [f for path in files for f in findings(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert problems == []


def test_resuming_reads_every_checkpoint_file_with_weights_only(small_model, bios, tmp_path, monkeypatch):
    fixed = dict(lr_schedule="constant", warmup_passes=0)  # epochs grow on resume only with this schedule
    train(str(small_model), bios, tmp_path / "lora", epochs=1, batch_size=6, device="cpu", **fixed)
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    train(str(small_model), bios, tmp_path / "lora", epochs=2, batch_size=6, device="cpu", resume=True, **fixed)
    assert len(calls) >= 3  # optimizer, scheduler and RNG state of the checkpoint
    assert calls == [True] * len(calls)
    assert not list((tmp_path / "lora").rglob("*.bin"))  # no pickled training_args.bin either

