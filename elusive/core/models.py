"""Loading language models and tokenizers: a hub id, a local directory, or a single ``.gguf`` file.

Every stage loads through this module, so device, dtype and quantisation rules live in one place:

* ``device``: ``auto`` picks CUDA when available, else CPU; ``multi`` spreads one model over all visible GPUs
  (accelerate's ``device_map="auto"``, for models too large for one GPU, e.g. Llama 3 70B). A model for a GPU
  is loaded straight onto it (``device_map``), never first into host RAM.
* ``dtype``: ``auto`` is bfloat16 on CUDA (when supported) and float32 on CPU (CPUs here have no bf16 units).
* ``quant``: ``8bit`` / ``4bit`` load through bitsandbytes (the pinned 0.50.2 ships CPU kernels), on CUDA or on the CPU
  (``device_map={"": "cpu"}``). 4-bit is NF4 computing in ``dtype`` (float32 on CPU); 8-bit keeps the other
  weights (norms, embeddings, LM head) in ``dtype``. Before loading, a tiny quantised layer is run on the target
  device, so a missing or unusable bitsandbytes is one clear error instead of a traceback mid-load. On the CPU,
  4-bit layers always take bitsandbytes' portable path (:func:`portable_4bit_on_cpu`), so any layer width works
  and results do not depend on which CPU ran them.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elusive.core.config import QUANTS
from elusive.core.errors import InputError

if TYPE_CHECKING:  # torch and transformers are imported where used: stages that only read files never load them
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")  # names of torch dtypes
BITSANDBYTES = "bitsandbytes==0.50.2"  # the version requirements.txt pins (its wheel has CPU and CUDA kernels)


def check_model_path(model: str, key: str = "model") -> None:
    """Refuse a local model path that does not exist or is not a model (without loading anything).

    Raises:
        InputError: Naming ``key``.
    """
    _source(model, key)


def _source(model: str, key: str = "model") -> tuple[str, dict[str, Any]]:
    """Split ``model`` into the ``from_pretrained`` name and extra kwargs (``gguf_file`` for a .gguf)."""
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InputError(f"{key}={model}: no such .gguf file; fix the path (e.g. run `make models`)")
        return str(path.parent.absolute()), {"gguf_file": path.name}
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "tokenizer.json").is_file():
            raise InputError(f"{key}={model}: the directory has no config.json; point {key}= at a saved model folder")
        return str(path.absolute()), {}
    if looks_local(model):  # a typo in a local path: say so now instead of retrying the hub for a minute
        parent = path.parent if path.parent.is_dir() else None
        present = [] if parent is None else sorted(p.name for p in parent.iterdir() if p.is_dir() and p.name[0] != ".")
        hint = f" ({parent}/ has: {', '.join(present[:10])})" if present else ""
        raise InputError(f"{key}={model}: no such model folder{hint}; fix the path")
    return model, {}


def looks_local(model: str) -> bool:
    """True when ``model`` can only be a local path: absolute, relative (``./``, ``../``, ``~``), more than one
    ``/`` (hub ids are ``org/name``), or inside a folder that exists here (``models/qwen-typo``)."""
    if model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model:
        return True
    parent = Path(model).expanduser().parent
    return parent != Path(".") and parent.is_dir()


def resolve_device(device: str = "auto") -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda[:n]`` into a device, refusing CUDA when there is none."""
    import torch

    if device in ("auto", "multi"):
        if device == "multi" and not torch.cuda.is_available():
            raise InputError("device=multi: needs CUDA GPUs; use device=cpu or device=auto")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device}: CUDA is not available on this machine; use device=cpu or device=auto")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise InputError(f"device={device}: not a torch device; use auto, cpu or cuda") from err


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Turn ``auto`` / ``float32`` / ``bfloat16`` / ``float16`` into a torch dtype for ``device``."""
    import torch

    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise InputError(f"dtype={dtype}: unknown; use one of auto, {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def numerics(device: str, dtype: str) -> dict[str, Any] | None:
    """What decides a stage's exact numbers besides its settings: the device type, the number of GPUs one model
    uses and the dtype it computes in — or None on the CPU in float32.

    On the CPU in float32, scores and predictions do not depend on the batch size or the number of processes, and a
    resumed training ends with the uninterrupted run's adapter (the tests check all three). On CUDA, and in bf16 or
    fp16, other batch shapes pick other kernels and summation orders, so these agree only approximately;
    ``run_experiment`` then puts this record and the batch sizes into its keys (docs/scaling_out.md).

    Raises:
        InputError: An unknown device or dtype, or CUDA asked for where there is none.
    """
    import torch

    target = resolve_device(device)
    resolved = resolve_dtype(dtype, target)
    if target.type == "cpu" and resolved == torch.float32:
        return None
    devices = torch.cuda.device_count() if device == "multi" else 1
    return {"device": target.type, "devices": devices, "dtype": str(resolved).removeprefix("torch.")}


def load_tokenizer(model: str, padding_side: str = "right") -> PreTrainedTokenizerBase:
    """Load the (fast) tokenizer of ``model`` and make sure it has a pad token.

    Args:
        model: Hub id, local directory or ``.gguf`` file.
        padding_side: ``right`` for scoring and training, ``left`` for batched generation.

    Raises:
        InputError: It cannot be loaded, or it is a slow tokenizer (no character offsets).
    """
    from transformers import AutoTokenizer

    name, extra = _source(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **extra)
    except (OSError, ValueError) as err:
        raise InputError(
            f"model={model}: cannot load its tokenizer ({str(err).splitlines()[0]}); give a local directory, "
            "a .gguf file, or a hub id reachable from this machine"
        ) from err
    if not tokenizer.is_fast:
        raise InputError(f"model={model}: only a slow tokenizer is available; the pipeline needs a fast one (tokenizer.json)")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise InputError(f"model={model}: the tokenizer has neither a pad nor an eos token; add a pad token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    if extra == {}:  # a local folder or a hub id (a .gguf has extra={"gguf_file": ...})
        from elusive.text.tokenizer_records import remember

        remember(model, tokenizer, padding_side)  # lets stage 3 check a dump against it later without transformers
    return tokenizer


def load_model(
    model: str,
    device: str = "auto",
    dtype: str = "auto",
    quant: str | None = None,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """Load a causal LM for inference or training.

    Args:
        model: Hub id, local directory or ``.gguf`` file (de-quantised on load).
        device: ``auto``, ``cpu``, ``cuda[:n]`` or ``multi`` (all GPUs, device_map="auto").
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        quant: None, ``8bit`` or ``4bit`` (bitsandbytes, on CUDA or CPU; see :func:`check_quant`).
        attn_implementation: e.g. ``eager`` when attention weights are needed; None keeps the default.

    Returns:
        The model on ``device``, in eval mode.

    Raises:
        InputError: Bad device/dtype/quant, bitsandbytes missing or unusable here, or the model cannot be loaded.
    """
    from transformers import AutoModelForCausalLM

    if quant not in QUANTS:
        raise InputError(f"quant={quant}: unknown; use null (no quantisation), 8bit or 4bit")
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    name, kwargs = _source(model)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quant is not None:
        check_quant(quant, target)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if quant == "8bit"
            else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype)
        )
        if device == "multi":
            kwargs["device_map"] = "auto"
        else:  # bitsandbytes quantises while loading, on the device the map names
            kwargs["device_map"] = {"": "cpu" if target.type == "cpu" else target.index or 0}
    elif device == "multi":
        kwargs["device_map"] = "auto"
    elif target.type != "cpu":  # straight onto the GPU: no copy in host RAM first (once per process under DDP)
        kwargs["device_map"] = {"": target.index if target.index is not None else 0}
    log.info("loading %s (device=%s, dtype=%s, quant=%s)", model, target, torch_dtype, quant)
    try:
        lm = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError) as err:
        raise InputError(
            f"model={model}: cannot load it ({str(err).splitlines()[0]}); give a local directory, a .gguf file, "
            "or a hub id reachable from this machine"
        ) from err
    if "device_map" not in kwargs:
        lm.to(target)
    if quant == "4bit":
        portable_4bit_on_cpu(lm)
    lm.eval()
    return lm


def portable_4bit_on_cpu(module: torch.nn.Module) -> int:
    """Make every 4-bit layer of ``module`` take bitsandbytes' portable CPU path; return how many it changed.

    bitsandbytes 0.50.2 decides per CPU: where the CPU has AVX-512 BF16, a ``Linear4bit`` in inference mode (not
    training, no gradient) repacks its weights on first use — it then needs ``out_features % 32 == 0`` and
    ``in_features >= 64`` (narrower layers fail: "N must be divisible by block_n") and rounds the NF4 block
    scales to bfloat16 — while other CPUs dequantise with float32 scales. So the same adapter would score
    differently, or not at all, depending on the machine. Turning the flag off gives every CPU the path an
    AVX2-only CPU takes (the one training uses everywhere). CUDA layers are unaffected (the flag is only read
    for inputs on the CPU). Hand-written: bitsandbytes has no public switch for it; the attribute is the pinned
    version's (``Linear4bit.support_avx512bf16_for_cpu``).
    """
    import bitsandbytes as bnb

    changed = 0
    for layer in module.modules():
        if isinstance(layer, bnb.nn.Linear4bit) and getattr(layer, "support_avx512bf16_for_cpu", False):
            layer.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def check_quant(quant: str | None, device: torch.device) -> None:
    """Make sure bitsandbytes can quantise on ``device`` before a model is loaded with ``quant``.

    Runs one tiny quantised linear layer (64 × 64) forward on ``device`` — once per process, quant and device —
    so an unsupported platform (no kernels for this CPU architecture or OS, a CUDA build mismatch) fails
    here, naming the platform.

    Raises:
        InputError: ``quant`` is unknown, bitsandbytes is not installed, or it cannot run on ``device``.
    """
    if quant not in QUANTS:
        raise InputError(f"quant={quant}: unknown; use null (no quantisation), 8bit or 4bit")
    if quant is not None:
        _check_bitsandbytes(quant, str(device))


def _check_bitsandbytes(quant: str, device: str) -> None:
    try:
        import bitsandbytes
    except ImportError as err:
        if importlib.util.find_spec("bitsandbytes") is None:  # also when sys.modules["bitsandbytes"] is None
            raise InputError(f"quant={quant}: needs bitsandbytes (pip install {BITSANDBYTES})") from err
        raise InputError(
            f"quant={quant}: bitsandbytes is installed but cannot be imported ({str(err).splitlines()[0]}); "
            f"reinstall it (pip install {BITSANDBYTES}) or use quant=null"
        ) from err
    _run_tiny_layer(quant, device, bitsandbytes.__version__)


@functools.cache
def _run_tiny_layer(quant: str, device: str, version: str) -> None:
    """One forward of a 64 × 64 quantised layer on ``device`` (cached: once per process and setting)."""
    import bitsandbytes as bnb
    import torch

    where = f"{platform.system()} {platform.machine()}, torch {torch.__version__}, device={device}"
    try:
        with torch.no_grad():
            if quant == "8bit":  # eval mode: the int8 matmul kernels (fp16 input: no cast warning)
                layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False).to(device).eval()
                out = layer(torch.randn(2, 64, device=device, dtype=torch.float16))
            else:  # eval mode, as stages 1 and 5 run it, on the path every CPU takes (portable_4bit_on_cpu)
                layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
                layer = layer.to(device).eval()
                portable_4bit_on_cpu(layer)
                out = layer(torch.randn(2, 64, device=device))
        if not torch.isfinite(out).all():
            raise RuntimeError("the quantised test layer gave non-finite outputs")
    except Exception as err:  # noqa: BLE001 - any failure of the library here means "cannot run on this platform"
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"quant={quant}: bitsandbytes {version} cannot run on this platform ({where}: {message}); use quant=null"
        ) from err
    log.info("bitsandbytes %s runs quant=%s on %s", version, quant, where)


class _Once(logging.Filter):
    """Let each distinct message through once: bitsandbytes' 8-bit matmul logs the same warning
    ("inputs will be cast from torch.float32 to float16") on every call of every layer."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


logging.getLogger("bitsandbytes.autograd._functions").addFilter(_Once())


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's inputs go: the device of its input embeddings (also for a model spread over GPUs)."""
    embeddings = getattr(model, "get_input_embeddings", None)
    if embeddings is not None and embeddings() is not None:
        return embeddings().weight.device
    return next(model.parameters()).device


def _text_setting(model: str, key: str) -> int | None:
    """One value of ``model``'s text config, read from its config without loading weights; None when the config
    cannot be read or does not say."""
    from transformers import AutoConfig

    name, extra = _source(model)
    try:
        config = AutoConfig.from_pretrained(name, **extra)
    except (OSError, ValueError):
        return None
    return getattr(config.get_text_config(), key, None)


def max_positions(model: str) -> int | None:
    """The longest sequence ``model`` was built for (``max_position_embeddings``); None when unknown."""
    return _text_setting(model, "max_position_embeddings")


def num_layers(model: str) -> int | None:
    """How many decoder layers ``model`` has (``num_hidden_layers``); None when unknown."""
    return _text_setting(model, "num_hidden_layers")


def describe(model: str) -> str:
    """A stable name for ``model`` in artifact metadata: a local file or folder as
    :func:`elusive.core.provenance.record_path` names it (relative inside the project), else the hub id."""
    from elusive.core.provenance import record_path

    path = Path(model).expanduser()
    return record_path(path) if path.exists() else model


