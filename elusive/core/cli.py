"""What the thin top-level scripts share: the typed config, ``--help``, early checks and one-line errors.

A script is::

    @script("train")
    def main(cfg: TrainConfig) -> None:
        seed_everything(cfg.seed)
        print(f"wrote {train(cfg)}")

:func:`script` checks the command line against the script's schema (:mod:`elusive.core.config`) before Hydra
runs — an unknown key is named with the closest known one, a value of the wrong type or out of range is
refused, sweeps (``-m alpha=0.5,0.7``) value by value — then lets Hydra compose the config, turns it into the
dataclass, resolves its paths against the directory the command was run from, checks every rule, logs it, and
calls ``main``. A ``-m`` sweep runs on Hydra's basic sweeper, and every job is checked before the first one runs
(:mod:`elusive.core.sweeps`). Bad input of any kind ends with one line ``error: key=value: what is wrong; the fix``
on stderr and exit status 2. Nothing here imports torch or transformers; only Hydra's public APIs are used.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from elusive.core.config import RELEASED_NAMES, SCHEMAS, check, check_field, help_text, known_keys, settings_fields
from elusive.core.errors import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")
TASKS: dict[str, Callable[[Any], Any]] = {}
"""Each script's ``main(cfg)`` by script name, once :func:`script` has decorated it."""
_LAUNCH_DIR = Path.cwd()  # the directory the command was run from (before Hydra could change it)


def fail(err: InputError | str) -> None:
    """Print ``error: <message>`` on stderr and exit with status 2 (and log it, when logging is set up)."""
    if logging.getLogger().handlers:  # else Python's last-resort handler would print it a second time
        log.error("%s", err)
    tqdm = getattr(sys.modules.get("tqdm.std"), "tqdm", None)
    if tqdm is not None and getattr(tqdm, "_instances", None):  # a progress bar cut short: start a new line
        print(file=sys.stderr)
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def resolve_path(path: str | os.PathLike[str] | None) -> Path | None:
    """Resolve ``path`` against the directory the command was run from (None and "" stay None)."""
    if path is None or str(path) == "":
        return None
    path = Path(path).expanduser()
    return path if path.is_absolute() else (_LAUNCH_DIR / path).absolute()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and, when the stage has imported it, torch (stage 3 and the summaries never do)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def script(name: str) -> Callable[[Callable[[Any], T]], Callable[[], None]]:
    """Decorate a top-level script's ``main(cfg)`` (see the module docstring).

    Args:
        name: The script's name, a key of :data:`elusive.core.config.SCHEMAS`.
    """
    schema = SCHEMAS[name]

    def decorate(task: Callable[[Any], T]) -> Callable[[], None]:
        @functools.wraps(task)  # Hydra finds conf/ and the job name through __wrapped__: the script's file
        def hydra_task(cfg: DictConfig) -> None:
            settings = None
            try:
                settings = to_settings(cfg, schema)
                log.info("config:\n%s", OmegaConf.to_yaml(OmegaConf.structured(settings)))
                task(settings)
            except InputError as err:
                fail(err)
            except Exception as err:  # a full disk is not a bug: one line naming the output, as for bad input
                message = disk_full(err, settings)
                if message is None:
                    raise
                fail(message)

        TASKS[name] = task  # a -m sweep's check (elusive.core.sweeps.SweepCheck) runs it up to its output checks

        def main() -> None:
            import hydra  # ~0.2 s: after --help
            from hydra.core.config_store import ConfigStore

            argv = sys.argv[1:]
            if {"--help", "-h"} & set(argv):
                try:
                    print(usage(name, task))
                except BrokenPipeError:  # e.g. piped into head
                    pass
                sys.exit(0)
            try:
                check_command_line(schema, argv)
            except InputError as err:
                fail(err)
            ConfigStore.instance().store(name=name, node=schema)
            sys.argv = [sys.argv[0], *with_sweep_check(argv)]
            hydra.main(version_base="1.3", config_path="conf", config_name=name)(hydra_task)()

        return main

    return decorate


DISK_FULL = ("No space left on device", "StorageFull", "Disk quota exceeded", "file write failed")
"""What the libraries say when a write fails for want of space (torch's C++ writer says only the last)."""


def disk_full(err: BaseException, settings: Any) -> str | None:
    """The one-line error for a write that failed because the disk (or quota) is full, else None.

    Python raises ``OSError(ENOSPC)``; safetensors (Rust) and torch.save (C++) raise their own types whose text
    says so; the cause may be chained. The output key is the one whose path holds the file (or the script's
    only output).
    """
    import errno

    chain, seen = [], err
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    full = [e for e in chain if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
            or any(text in str(e) for text in DISK_FULL)]
    if not full:
        return None
    file = next((e.filename for e in full if isinstance(e, OSError) and e.filename), None)
    outputs = [] if settings is None else [(f.name, getattr(settings, f.name)) for f in settings_fields(type(settings))
                                           if f.metadata.get("output") and getattr(settings, f.name) is not None]
    key = None
    if file is not None:
        target = os.path.abspath(file)
        def holds(v: str) -> bool:  # the output itself, a file in its folder, or a file named after it
            return target == v or target.startswith(v.rstrip("/") + "/") or (
                os.path.dirname(target) == os.path.dirname(v) and os.path.basename(v) in os.path.basename(target))

        key = next(((k, v) for k, v in outputs if holds(v)), None)
    if key is None and len(outputs) == 1:
        key = outputs[0]
    where = f" writing {file}" if file else ""
    sure = any(not (e.__class__.__name__ == "RuntimeError" and "file write failed" in str(e)) for e in full)
    what = "no space left on the device" if sure else "a write failed (torch: file write failed; is the disk full?)"
    shown, fix = (f"{key[0]}={key[1]}", f"free space or give {key[0]} a folder on another disk") if key else \
        ("output", "free space or write to another disk")
    resume = " (resume=true continues from the last complete checkpoint)" if settings is not None and \
        hasattr(settings, "resume") else ""
    return f"{shown}: {what}{where}; {fix}, then run again{resume}"


SWEEP_CHECK = "++hydra.callbacks.sweep_check._target_=elusive.core.sweeps.SweepCheck"
"""The override that registers :class:`elusive.core.sweeps.SweepCheck` (visible in a sweep's multirun.yaml)."""


def with_sweep_check(argv: list[str]) -> list[str]:
    """``argv`` with :data:`SWEEP_CHECK` added to a multirun: Hydra's basic sweeper runs the jobs, the callback
    checks them all before the first one (a single run checks itself)."""
    return [*argv, SWEEP_CHECK] if hydra_command_line(argv)[1] else list(argv)


def hydra_command_line(argv: list[str]) -> tuple[list[str], bool]:
    """The overrides of a script's command line and whether it asks for a multirun (``-m``/``--multirun``), read
    as Hydra reads its command line: its options, and the values of those that take one, are not overrides."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--multirun", "-m", action="store_true")
    for flags in (("--help", "-h"), ("--hydra-help",), ("--version",), ("--resolve",), ("--run", "-r"),
                  ("--shell-completion", "-sc")):
        parser.add_argument(*flags, action="store_true")
    for flags in (("--cfg", "-c"), ("--package", "-p"), ("--config-path", "-cp"), ("--config-name", "-cn"),
                  ("--config-dir", "-cd"), ("--experimental-rerun",)):
        parser.add_argument(*flags)
    parser.add_argument("--info", "-i", nargs="?", const="all",
                        choices=["all", "config", "defaults", "defaults-tree", "plugins", "searchpath"])
    args, _ = parser.parse_known_args(argv)
    return list(args.overrides or []), bool(args.multirun)


def usage(name: str, task: Callable) -> str:
    """``--help``: the script's docstring, then every key with its type, default and help."""
    doc = (sys.modules[task.__module__].__doc__ or "").strip()
    lines = [doc, "", f"Keys (override with key=value; Hydra sweeps with -m key=a,b):", *help_text(SCHEMAS[name])]
    groups = sorted(_groups(SCHEMAS[name]))
    if groups:  # e.g. experiment=cpu_tiny reads conf/experiment/cpu_tiny.yaml beside the script
        conf = Path(sys.modules[task.__module__].__file__ or ".").resolve().parent / "conf"
        lines += ["", "Config groups (a preset selects its pair and recipe; given here, they replace its choice):"]
        for group in groups:
            options = ", ".join(sorted(p.stem for p in (conf / group).glob("*.yaml")))
            lines.append(f"  {group}=<name>: conf/{group}/<name>.yaml ({options})")
    lines += ["", "Hydra's own options: --hydra-help, --cfg job, -m/--multirun, hydra.run.dir=..."]
    return "\n".join(lines)


def to_settings(cfg: DictConfig, schema: type) -> Any:
    """The composed Hydra config as the schema's dataclass, paths resolved, every rule checked.

    Raises:
        InputError: A required key is missing or a value breaks its rule.
    """
    missing = [key for key in known_keys(schema) if OmegaConf.is_missing(cfg, key)] if isinstance(cfg, DictConfig) else []
    if missing:
        hint = " ".join(f"{key}=<...>" for key in missing)
        raise InputError(f"missing required key(s) {', '.join(missing)}; add {hint} to the command line")
    try:
        settings = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
    except OmegaConfBaseException as err:  # e.g. save_name=${oops}: an interpolation that cannot be resolved
        key = getattr(err, "full_key", None) or "?"
        raw = _raw(cfg, key)
        raise InputError(f"{key}={raw}: cannot be resolved ({str(err).splitlines()[0]}); fix or quote the ${{...}} "
                         "in it") from None
    settings = resolve_paths(settings)
    check(settings)
    return settings


def resolve_paths(settings: Any) -> Any:
    """A copy of a config dataclass whose path fields are absolute, resolved against the launch directory."""
    changes = {}
    for f in settings_fields(type(settings)):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            changes[f.name] = resolve_paths(value)
        elif f.metadata.get("path") and value is not None:
            changes[f.name] = str(resolve_path(value))
    return dataclasses.replace(settings, **changes)


# --------------------------------------------------------------------------------------------------
# The command line, checked before Hydra composes anything
# --------------------------------------------------------------------------------------------------


def check_command_line(schema: type, argv: list[str]) -> None:
    """Refuse unknown keys, values of the wrong type and values that break a rule, naming the key.

    Hydra would refuse the first two with a traceback-like message and exit status 1 (and ``+typo=...`` would
    be accepted and ignored); a rule would only be checked after the config is composed, for each job of a
    sweep. Here every value of every sweep is checked at once.

    Raises:
        InputError: ``key=value: what is wrong; the fix``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    lines, multirun = hydra_command_line(argv)
    parser = OverridesParser.create()
    try:
        overrides = parser.parse_overrides(lines)
    except HydraException as err:
        for line in lines:  # name the one Hydra cannot read
            try:
                parser.parse_overrides([line])
            except HydraException as one:
                raise InputError(_unreadable(line, one)) from None
        raise InputError(f"{' '.join(lines)}: not a valid override ({str(err).splitlines()[0]}); "
                         "write key=value") from err
    keys = known_keys(schema)
    groups = _groups(schema)
    base = OmegaConf.structured(schema)
    for override in overrides:
        key = override.key_or_group
        if override.is_hydra_override() or key in groups or override.is_delete():
            continue
        dict_key = _dict_key(key, keys)
        if dict_key and not override.is_force_add():  # Hydra closes dicts: a key it does not hold yet fails there
            raise InputError(f"{override.input_line}: {dict_key} is a dict, and Hydra adds to a dict only with ++; "
                             f"write ++{override.input_line.lstrip('+')}")
        if dict_key and key != dict_key:  # e.g. method_params.random.alpha: checked with the composed config
            continue
        if key not in keys:
            raise InputError(_unknown(key, override.input_line, keys))
        if override.is_add() and not override.is_force_add():
            raise InputError(f"{override.input_line}: {key} is already a key; write {override.input_line[1:]} without +")
        if override.is_sweep_override() and not multirun:  # Hydra would stop with a multi-line message
            value = override.input_line.split("=", 1)[1]
            keep = f"quote the value to keep it whole ({_quoted(key, value)}), or " if key in keys and \
                keys[key].metadata.get("path") else ""
            raise InputError(f"{override.input_line}: Hydra reads the commas as several values to sweep over; "
                             f"{keep}add -m to run one job per value")
        if override.is_sweep_override():
            values = zip(override.sweep_iterator(), override.sweep_string_iterator())
        else:
            values = [(override.value(), override.input_line.split("=", 1)[1])]
        for value, text in values:
            check_value(base, key, keys[key], value, text)


def check_value(base: DictConfig, key: str, f: dataclasses.Field, value: Any, text: str) -> None:
    """Check one override value (``text`` as typed) against the field's type (through OmegaConf) and rule."""
    trial = base.copy()
    try:
        OmegaConf.update(trial, key, value, merge=True)
    except OmegaConfBaseException as err:
        example = OmegaConf.select(base, key)
        raise InputError(f"{key}={text}: {_type_words(f)}; give e.g. {key}={_shown(example)}") from err
    if isinstance(value, str) and "${" in value:  # ${alpha}, ${hydra:runtime.output_dir}: checked once composed
        return
    converted = OmegaConf.select(trial, key)
    if OmegaConf.is_config(converted):
        converted = OmegaConf.to_container(converted)
    check_field(key, f, converted)


def _unreadable(line: str, err: Exception) -> str:
    """The error for an override Hydra's grammar cannot read, e.g. a path holding ``=`` or ``[``."""
    key, sep, value = line.partition("=")
    reason = str(err).splitlines()[0]
    if not sep:
        return f"{line}: not a valid override ({reason}); write key=value"
    return (f"{line}: Hydra cannot read this value ({reason}); quote a value that holds = [ ] {{ }} ( ) , or spaces: "
            f"{_quoted(key, value)}")


def _quoted(key: str, value: str) -> str:
    """``key='value'`` as typed in a shell (the quotes must reach Hydra): ``"key='value'"``."""
    quote = '"' if "'" in value else "'"
    return f"\"{key}={quote}{value}{quote}\"" if quote == "'" else f"'{key}={quote}{value}{quote}'"


def _raw(cfg: Any, key: str) -> str:
    """The value of ``key`` in ``cfg`` as written (interpolations unresolved), or ``?``."""
    try:
        node: Any = OmegaConf.to_container(cfg, resolve=False)
        for part in key.split("."):
            node = node[part]
        return str(node)
    except (KeyError, TypeError, ValueError, OmegaConfBaseException):
        return "?"


def _dict_key(key: str, keys: dict) -> str | None:
    """The dict-typed key that ``key`` is or lies inside (``method_params`` for ``method_params.random.alpha``)."""
    return next((k for k, f in keys.items()
                 if str(f.type).startswith("dict") and (key == k or key.startswith(k + "."))), None)


def _groups(schema: type) -> set[str]:
    defaults = next((f for f in dataclasses.fields(schema) if f.name == "defaults"), None)
    if defaults is None:
        return set()
    return {key for entry in defaults.default_factory() if isinstance(entry, dict) for key in entry}


def _unknown(key: str, line: str, keys: dict) -> str:
    bare = key.split(".")[-1]
    if bare in RELEASED_NAMES:
        new = key[: len(key) - len(bare)] + RELEASED_NAMES[bare]
        value = line.split("=", 1)[1] if "=" in line else "..."
        return f"{line.lstrip('+')}: unknown key (the released code's name for {new}); use {new}={value}"
    close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{line.lstrip('+')}: unknown key; {hint}--help lists the keys"


def _type_words(f: dataclasses.Field) -> str:
    text = str(f.type)
    if "int" in text and "list" not in text:
        return "must be an integer"
    if "float" in text:
        return "must be a number"
    if "bool" in text:
        return "must be true or false"
    if "list" in text:
        return "must be a list like [1,2]"
    return "has the wrong type"


def _shown(value: Any) -> str:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return "null" if value is None else str(value)


def compose_settings(name: str, overrides: list[str], conf_dir: Path | None = None) -> Any:
    """The settings a script would run with for ``overrides`` (e.g. ``["experiment=cpu_prereg", "seed=1"]``),
    composed with Hydra's public compose API outside a Hydra run: the schema's dataclass, paths resolved,
    every rule checked.

    Raises:
        InputError: As :func:`to_settings`, or an override Hydra refuses.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException

    schema = SCHEMAS[name]
    ConfigStore.instance().store(name=name, node=schema)
    conf = conf_dir or Path(__file__).resolve().parents[2] / "conf"  # the project root's conf/
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name=name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise InputError(f"{' '.join(overrides)}: {str(err).splitlines()[0]}") from err
    cfg = OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg).items() if k != "hydra"}) \
        if "hydra" in cfg else cfg
    return to_settings(OmegaConf.merge(OmegaConf.structured(schema), cfg), schema)
