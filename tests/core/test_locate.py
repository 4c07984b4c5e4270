"""Where a model comes from, found without downloading (run_experiment dry_run=true): a local path, the local
Hugging Face cache (a fake one here), the hub's answer, or "could not" when the hub cannot be reached."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from elusive.core.config import RunExperimentConfig
from elusive.core.errors import InputError
from elusive.core.identity import locate
from elusive.experiment import run_experiment


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty fake Hugging Face cache, and a hub whose answer the test sets (default: unreachable)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    answer = {"raise": OSError("[Errno -2] Name or service not known")}

    def model_info(self, repo_id, **kwargs):
        if answer["raise"] is not None:
            raise answer["raise"]
        return type("Info", (), {"sha": "abc123"})()

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    return cache, answer


def _cached(cache, repo: str, revision: str = "0123abcd"):
    """A model in the cache as huggingface_hub lays it out: refs/main → snapshots/<revision>/config.json."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    return snapshot


def test_a_local_folder_and_a_cached_hub_id_are_found_without_the_hub(small_model, hub):
    cache, answer = hub
    answer["raise"] = AssertionError("asked the hub")
    assert locate(str(small_model)) == (True, f"model={small_model}: the local folder {small_model.resolve()}")
    snapshot = _cached(cache, "org/tiny")
    assert locate("org/tiny", "large_model") == (True, f"large_model=org/tiny: in the local Hugging Face cache "
                                                       f"({snapshot})")


def test_an_unreachable_hub_is_said_and_a_missing_model_refused(hub):
    _, answer = hub
    found, said = locate("org/absent")
    assert not found and said == ("model=org/absent: could not be resolved: not a local path, not in the local "
                                  "Hugging Face cache, and the hub could not be reached ([Errno -2] Name or service "
                                  "not known); the run will have to download it")
    answer["raise"] = None
    assert locate("org/there") == (True, "model=org/there: on the hub (revision abc123), not downloaded yet")
    response = SimpleNamespace(headers={}, request=None)  # what the hub's errors read from an HTTP response
    answer["raise"] = GatedRepoError("gated", response=response)
    assert locate("org/gated")[0] and "gated" in locate("org/gated")[1]
    answer["raise"] = RepositoryNotFoundError("404", response=response)
    with pytest.raises(InputError, match=r"^model=org/typo: no such model on the Hugging Face hub"):
        locate("org/typo")


def test_dry_run_says_which_models_it_could_not_resolve(bios, tmp_path, hub, caplog):
    cfg = RunExperimentConfig(model="org/absent", method="random", dataset=str(bios), out_root=str(tmp_path / "exp"),
                              dry_run=True)
    with caplog.at_level(logging.INFO):
        assert run_experiment(cfg) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["model=org/absent: could not be resolved: not a local path, not in the local Hugging Face "
                        "cache, and the hub could not be reached ([Errno -2] Name or service not known); the run "
                        "will have to download it"]
    assert "dry run: every input and setting is usable except model (not found here); nothing was written" in \
        caplog.messages
    assert not (tmp_path / "exp").exists()
