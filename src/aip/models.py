"""Which YOLO model to run, and its exported artifacts for each runtime.

Every backend runs one model, named by a :class:`ModelSource`: always a
``.pt`` checkpoint file, so that ultralytics' exporter and predictor load
exactly the weights aip runs. A user's trained ``.pt`` is used as is. When
there are no weights (none given, or a ``*.yaml`` architecture), the
architecture is built with a fixed torch seed and saved once as a ``.pt`` in
the cache: every process, export and reference predictor then shares the
same random weights, and a loud :class:`RandomWeightsWarning` says that its
detections mean nothing (its throughput is real).

:func:`export` turns that checkpoint into the runtime artifacts
(``.onnx``, ``.torchscript``, ``.mlpackage``) with ultralytics' exporter,
cached under a name keyed by the checkpoint's content hash, format, input
size and precision, and reused when present.

torch and ultralytics are imported inside the functions that need them:
importing this module is cheap and has no side effects.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MODEL",
    "EXPORT_SUFFIXES",
    "ModelSource",
    "RandomWeightsWarning",
    "artifact_path",
    "default_cache_dir",
    "export",
    "load_torch_model",
    "parse_imgsz",
    "resolve_model",
]

#: What runs when no model is named: the nano architecture, seeded.
DEFAULT_MODEL = "yolo11n.yaml"

ExportFormat = Literal["onnx", "coreml", "torchscript"]

#: Exported artifact per format (a ``.mlpackage`` is a directory).
EXPORT_SUFFIXES: dict[str, str] = {"onnx": ".onnx", "coreml": ".mlpackage", "torchscript": ".torchscript"}

# The module each export format needs besides ultralytics. Checked before
# calling the exporter, which would otherwise try to pip-install it.
_EXPORT_REQUIREMENTS = {
    "onnx": ("onnx", "onnx"),
    "coreml": ("coremltools", "coreml"),
    "torchscript": ("torch", "torch"),
}

# Marks a checkpoint aip saved from a seeded architecture. ultralytics
# ignores unknown checkpoint keys and keeps them on ``YOLO(...).ckpt``.
_RANDOM_WEIGHTS_KEY = "aip_random_weights"

_STRIDE = 32  # YOLO11's largest stride: input sides must be multiples of it


class RandomWeightsWarning(UserWarning):
    """The model has seeded random weights: throughput is real, detections are not."""


@dataclass(frozen=True)
class ModelSource:
    """A YOLO checkpoint ready to load or export; small and picklable.

    Attributes:
        path: the ``.pt`` file: the user's weights, or the seeded ones aip saved.
        digest: SHA-256 of that file (hex); keys the exported artifacts.
        class_names: the model's class names, by class index.
        random_weights: built from an architecture with a seed, not trained.
        seed: the torch seed of the random weights (None for trained ones).
    """

    path: Path
    digest: str
    class_names: tuple[str, ...]
    random_weights: bool = False
    seed: int | None = None

    @property
    def name(self) -> str:
        """The checkpoint's file stem, e.g. ``"yolo11n"``."""
        return self.path.stem


def parse_imgsz(
    value: int | tuple[int, int] | list[int] | None, default: tuple[int, int] = (640, 640)
) -> tuple[int, int]:
    """An input size option as ``(height, width)``: ``640`` means square, ``None`` the default.

    Raises ValueError unless both sides are positive multiples of 32 (YOLO11's largest stride).
    """
    if value is None:
        return default
    height, width = (value, value) if isinstance(value, int) else value
    if min(height, width) < _STRIDE or height % _STRIDE or width % _STRIDE:
        raise ValueError(f"imgsz must be (height, width) in positive multiples of {_STRIDE}, got {value!r}")
    return (int(height), int(width))


def default_cache_dir() -> Path:
    """``~/.cache/aip/models`` (resolved at call time, never at import)."""
    return Path.home() / ".cache" / "aip" / "models"


def resolve_model(model: str | Path | None = None, seed: int = 0, *, cache_dir: Path | None = None) -> ModelSource:
    """Turn a model name into a loadable :class:`ModelSource`.

    Args:
        model: a ``.pt`` checkpoint (real weights); a ``*.yaml`` architecture,
            a path or one bundled with ultralytics such as ``"yolo11n.yaml"``
            (seeded random weights); ``None`` means ``"yolo11n.yaml"``.
        seed: torch seed for the random weights of a ``.yaml``.
        cache_dir: where the seeded ``.pt`` is saved (default
            :func:`default_cache_dir`); reused when already there.

    Raises:
        FileNotFoundError: the file does not exist (aip never downloads weights).
        ValueError: the file is not a YOLO ``.pt`` checkpoint or ``.yaml``.

    Warns:
        RandomWeightsWarning: whenever the weights are seeded random ones.
    """
    spec = str(DEFAULT_MODEL if model is None else model)
    path = Path(spec).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        source = _seeded_checkpoint(spec, seed, cache_dir or default_cache_dir())
    elif suffix == ".pt":
        if not path.is_file():
            raise FileNotFoundError(
                f"model weights {spec!r} not found; aip never downloads weights: pass the path of a "
                f"YOLO .pt file, or {DEFAULT_MODEL!r} for seeded random weights (throughput only)"
            )
        source = _load_checkpoint_source(path)
    elif suffix in (".onnx", ".mlpackage", ".torchscript"):
        raise ValueError(
            f"{spec!r} is an exported model; pass it to its backend directly (onnx, coreml), "
            "or give the .pt it was exported from"
        )
    else:
        raise ValueError(f"{spec!r} is not a model: expected a YOLO .pt checkpoint or a .yaml architecture")
    if source.random_weights:
        warnings.warn(
            f"model {spec!r} has RANDOM weights (architecture seeded with {source.seed}, saved as {source.path}): "
            "its detections are MEANINGLESS, only throughput and latency are real. "
            "Pass trained weights (e.g. yolo11n.pt) for real detections.",
            RandomWeightsWarning,
            stacklevel=2,
        )
    return source


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_checkpoint_source(path: Path) -> ModelSource:
    """Validate a ``.pt`` by loading it with ultralytics; read its class names and aip marker."""
    # torch checkpoints are zip archives: refuse anything else before
    # ultralytics gets it (it would retry, or try to download a replacement).
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a PyTorch checkpoint (not a zip archive): expected a YOLO .pt file")
    from ultralytics import YOLO

    try:
        yolo = YOLO(str(path))
    except Exception as error:  # ultralytics raises TypeError, RuntimeError, KeyError... for bad files
        raise ValueError(f"{path} is not a loadable YOLO .pt checkpoint: {error}") from error
    if yolo.task != "detect":
        raise ValueError(f"{path} is a YOLO {yolo.task!r} model; aip runs detection models only")
    marker = (yolo.ckpt or {}).get(_RANDOM_WEIGHTS_KEY)
    names = yolo.names
    return ModelSource(
        path=path.resolve(),
        digest=_file_digest(path),
        class_names=tuple(names[i] for i in sorted(names)),
        random_weights=marker is not None,
        seed=None if marker is None else int(marker["seed"]),
    )


def _seeded_checkpoint(yaml_spec: str, seed: int, cache_dir: Path) -> ModelSource:
    """Build ``yaml_spec`` with torch seeded to ``seed`` and save it as a ``.pt`` once."""
    import ultralytics

    yaml_path = Path(yaml_spec).expanduser()
    # The ultralytics version is in the name: another version may build other weights from the same seed.
    target = cache_dir / f"{yaml_path.stem}-seed{seed}-ultralytics{ultralytics.__version__}.pt"
    if not target.is_file():
        import torch
        from ultralytics import YOLO

        with torch.random.fork_rng():  # leave the caller's RNG as it was
            torch.manual_seed(seed)
            try:  # a path, or the name of a yaml bundled with ultralytics ("yolo11n.yaml": yolo11.yaml, scale n)
                yolo = YOLO(yaml_spec)
            except FileNotFoundError as error:
                raise FileNotFoundError(
                    f"model architecture {yaml_spec!r} not found, neither as a file nor among ultralytics' bundled yamls"
                ) from error
        # Checkpoint keys ride along on save and come back on load.
        yolo.ckpt = {_RANDOM_WEIGHTS_KEY: {"architecture": yaml_spec, "seed": seed}}
        _write_once(target, yolo.save)
    return _load_checkpoint_source(target)


def _write_once(target: Path, write: Callable[[str], object]) -> None:
    """Call ``write(path)`` on a temporary file beside ``target``, then link it into place.

    Workers may build the same model at once: each writes its own file, the
    first link wins, and the file never changes after (its digest holds).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=target.suffix)
    os.close(handle)
    try:
        write(temporary)
        os.link(temporary, target)
    except FileExistsError:
        pass
    finally:
        Path(temporary).unlink(missing_ok=True)


def _export_dir(source: ModelSource, cache_dir: Path | None) -> Path:
    """``cache_dir``, else beside the checkpoint if writable, else the default cache."""
    if cache_dir is not None:
        return cache_dir
    return source.path.parent if os.access(source.path.parent, os.W_OK) else default_cache_dir()


def export(
    model_source: ModelSource | str | Path | None,
    fmt: ExportFormat,
    imgsz: tuple[int, int] = (640, 640),
    half: bool = False,
    cache_dir: Path | None = None,
) -> Path:
    """Export a model for a runtime with ultralytics' exporter, or reuse the cached export.

    Args:
        model_source: a :class:`ModelSource`, or anything :func:`resolve_model` takes.
        fmt: ``"onnx"``, ``"coreml"`` (an ``.mlpackage``) or ``"torchscript"``.
        imgsz: the fixed input (height, width), multiples of 32.
        half: float16 weights (ONNX on the CPU keeps float32 inputs and outputs).
        cache_dir: where artifacts live; default beside the checkpoint (if
            writable, else :func:`default_cache_dir`).

    Returns:
        The artifact's path, named ``<stem>-<hash>-<h>x<w>[-fp16].<ext>``;
        the same model, format, size and precision always map to the same file.

    Raises:
        ValueError: an unknown format or a bad input size.
        ModuleNotFoundError: the format's converter (onnx, coremltools) is not installed.
        RuntimeError: ultralytics' exporter failed.
    """
    if fmt not in EXPORT_SUFFIXES:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_SUFFIXES)}")
    height, width = parse_imgsz(imgsz)
    for module, extra in (("ultralytics", "ultralytics"), _EXPORT_REQUIREMENTS[fmt]):
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"exporting to {fmt} needs {module}: pip install 'aip[{extra}]'", name=module)
    source = model_source if isinstance(model_source, ModelSource) else resolve_model(model_source)
    directory = _export_dir(source, cache_dir)
    precision = "-fp16" if half else ""
    target = directory / f"{source.name}-{source.digest[:12]}-{height}x{width}{precision}{EXPORT_SUFFIXES[fmt]}"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    # ultralytics writes its export beside the checkpoint it loaded: export a
    # private copy in a scratch directory, then rename the result into place.
    with tempfile.TemporaryDirectory(dir=directory, prefix=".aip-export-") as scratch:
        weights = Path(scratch) / source.path.name
        shutil.copyfile(source.path, weights)
        produced = _run_exporter(weights, fmt, (height, width), half)
        try:
            os.replace(produced, target)
        except OSError:
            if not target.exists():  # else a concurrent export of the same key won the rename
                raise
    return target


def artifact_path(
    model: str | Path | None,
    fmt: ExportFormat,
    imgsz: tuple[int, int] = (640, 640),
    half: bool = False,
    seed: int = 0,
) -> Path:
    """The ``fmt`` artifact a backend loads: ``model`` itself if it already is one, else its export.

    An existing artifact (``.onnx``, ``.mlpackage``, ``.torchscript``) is
    used as given, whatever ``imgsz`` says; anything else goes through
    :func:`resolve_model` (with ``seed``) and :func:`export`.
    """
    path = Path(str(DEFAULT_MODEL if model is None else model)).expanduser()
    if path.suffix.lower() != EXPORT_SUFFIXES[fmt]:
        return export(resolve_model(path, seed), fmt, imgsz, half)
    if not path.exists():
        raise FileNotFoundError(f"{fmt} model {str(path)!r} not found")
    return path


def _run_exporter(weights: Path, fmt: str, imgsz: tuple[int, int], half: bool) -> Path:
    import torch
    from ultralytics import YOLO
    from ultralytics.cfg import DEFAULT_CFG_DICT

    # ultralytics >= 8.4 names precision ``quantize``; older ones ``half``.
    options: dict[str, Any] = {"quantize": 16 if half else None} if "quantize" in DEFAULT_CFG_DICT else {"half": half}
    if fmt == "onnx":
        options["simplify"] = False  # onnxslim is not needed, and ultralytics would pip-install it
    try:
        with warnings.catch_warnings():
            # Tracing notes and torch's deprecation of the tracing exporters
            # ultralytics calls: nothing for our user to act on.
            for category in (DeprecationWarning, FutureWarning, torch.jit.TracerWarning):
                warnings.filterwarnings("ignore", category=category, module=r"(torch|ultralytics)\b")
            produced = YOLO(str(weights)).export(
                format=fmt,
                imgsz=list(imgsz),
                device="cpu",
                dynamic=False,  # fixed shapes: the fastest graphs, and the ANE needs them
                nms=False,  # aip runs its own NMS on the raw (1, 4 + nc, N) head output
                verbose=False,
                **options,
            )
    except Exception as error:
        raise RuntimeError(f"ultralytics could not export {weights.name} to {fmt} at {imgsz}: {error}") from error
    return Path(produced)


def load_torch_model(
    model_source: ModelSource | str | Path | None, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """The checkpoint's network as ultralytics' predictor runs it, for raw inference.

    float32, Conv+BatchNorm fused, eval mode, no gradients, on ``device``.
    Called on a (1, 3, H, W) float tensor in [0, 1] it returns the head output
    ``(1, 4 + nc, N)`` (first element of a tuple).
    """
    import torch
    from ultralytics.nn.tasks import load_checkpoint

    source = model_source if isinstance(model_source, ModelSource) else resolve_model(model_source)
    network, _ = load_checkpoint(str(source.path), device=torch.device("cpu"))
    network = network.fuse(verbose=False).eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    model: torch.nn.Module = network.to(device)
    return model
