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

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
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
    "exported_imgsz",
    "load_torch_model",
    "no_auto_install",
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

#: The Core ML package's input: the letterboxed RGB frame as aip's
#: preprocessing writes it, (1, 3, H, W) float32 in [0, 1].
COREML_INPUT = "images"
#: Its one output: the raw head, (1, 4 + nc, N) float32 (xywh boxes in input
#: pixels, then class scores), decoded by aip's own NMS.
COREML_OUTPUT = "raw_head"
#: Metadata key holding the compute precision ("float16" or "float32").
COREML_PRECISION_KEY = "aip.compute_precision"


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
    """``models`` in aip's cache folder (``$AIP_CACHE_DIR``, else ``~/.cache/aip``),
    resolved at call time, never at import."""
    from aip.cache import cache_dir

    return cache_dir() / "models"


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
    dynamic_batch: bool = False,
) -> Path:
    """Export a model for a runtime with ultralytics' exporter, or reuse the cached export.

    Args:
        model_source: a :class:`ModelSource`, or anything :func:`resolve_model` takes.
        fmt: ``"onnx"``, ``"coreml"`` (an ``.mlpackage``) or ``"torchscript"``.
        imgsz: the fixed input (height, width), multiples of 32.
        half: float16 weights (ONNX on the CPU keeps float32 inputs and outputs).
        cache_dir: where artifacts live; default beside the checkpoint (if
            writable, else :func:`default_cache_dir`).
        dynamic_batch: ONNX only: a batch dimension of any size (for
            workers that batch frames); the height and width stay ``imgsz``.

    Returns:
        The artifact's path, named ``<stem>-<hash>-<h>x<w>[-fp16].<ext>``;
        the same model, format, size and precision always map to the same file.

    Raises:
        ValueError: an unknown format or a bad input size.
        ModuleNotFoundError: the format's converter (onnx, coremltools) is not installed.
        RuntimeError: the exporter or converter failed.

    Core ML is converted by aip itself (:func:`_convert_coreml`), not by
    ultralytics' exporter: see there for why.
    """
    if fmt not in EXPORT_SUFFIXES:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_SUFFIXES)}")
    size = parse_imgsz(imgsz)
    _check_export_modules(fmt)
    source = model_source if isinstance(model_source, ModelSource) else resolve_model(model_source)
    directory = _export_dir(source, cache_dir)
    if dynamic_batch and fmt != "onnx":
        raise ValueError(f"a dynamic batch is for ONNX exports, not {fmt}")
    target = directory / _artifact_name(source, fmt, size, half, dynamic_batch)
    if not target.exists():
        _export_to(target, source, fmt, size, half, dynamic_batch)
    return target


def _check_export_modules(fmt: ExportFormat) -> None:
    """Raise ModuleNotFoundError, saying what to install, unless ``fmt``'s exporter can run."""
    for module, extra in (("ultralytics", "ultralytics"), _EXPORT_REQUIREMENTS[fmt]):
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"exporting to {fmt} needs {module}: pip install 'aip[{extra}]'", name=module)


def _artifact_name(source: ModelSource, fmt: ExportFormat, imgsz: tuple[int, int], half: bool,
                   dynamic_batch: bool) -> str:
    """``<stem>-<hash>-<h>x<w>[-fp16][-nx].<ext>``: one name per model, format, size and precision."""
    height, width = imgsz
    precision = "-fp16" if half else ""
    batching = "-nx" if dynamic_batch else ""
    return f"{source.name}-{source.digest[:12]}-{height}x{width}{precision}{batching}{EXPORT_SUFFIXES[fmt]}"


def _export_to(target: Path, source: ModelSource, fmt: ExportFormat, imgsz: tuple[int, int], half: bool,
               dynamic_batch: bool) -> None:
    """Export ``source`` and rename the artifact to ``target`` (a concurrent export may win)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # ultralytics writes its export beside the checkpoint it loaded: export a
    # private copy in a scratch directory, then rename the result into place.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".aip-export-") as scratch:
        weights = Path(scratch) / source.path.name
        shutil.copyfile(source.path, weights)
        if fmt == "coreml":
            produced = _convert_coreml(weights, imgsz, half)
        else:
            produced = _run_exporter(weights, fmt, imgsz, half, dynamic_batch)
        try:
            os.replace(produced, target)
        except OSError:
            if not target.exists():  # else a concurrent export of the same key won the rename
                raise


def artifact_path(
    model: str | Path | None,
    fmt: ExportFormat,
    imgsz: tuple[int, int] = (640, 640),
    half: bool = False,
    seed: int = 0,
    dynamic_batch: bool = False,
) -> Path:
    """The ``fmt`` artifact a backend loads: ``model`` itself if it already is one, else its export.

    An existing artifact (``.onnx``, ``.mlpackage``, ``.torchscript``) is
    used as given, whatever ``imgsz`` says; anything else goes through
    :func:`resolve_model` (with ``seed``) and :func:`export`.
    """
    path = Path(str(DEFAULT_MODEL if model is None else model)).expanduser()
    if path.suffix.lower() != EXPORT_SUFFIXES[fmt]:
        return export(resolve_model(path, seed), fmt, imgsz, half, dynamic_batch=dynamic_batch)
    if not path.exists():
        raise FileNotFoundError(f"{fmt} model {str(path)!r} not found")
    return path


@contextlib.contextmanager
def no_auto_install() -> Iterator[None]:
    """Keep ultralytics from pip-installing packages while it exports.

    Its exporters check their requirements and, unless ``YOLO_AUTOINSTALL``
    was false when ultralytics was imported, pip-install what does not match
    (the Core ML export would replace numpy >= 2.4 by numpy <= 2.3.5 in the
    user's environment). aip checks what each format needs itself and never
    installs anything behind the user's back: with auto-install off a failed
    check is only logged, and the export goes on with what is installed.
    """
    from ultralytics.utils import checks

    saved = checks.AUTOINSTALL
    checks.AUTOINSTALL = False
    try:
        yield
    finally:
        checks.AUTOINSTALL = saved


def _run_exporter(weights: Path, fmt: str, imgsz: tuple[int, int], half: bool,
                  dynamic_batch: bool = False) -> Path:
    import torch
    from ultralytics import YOLO
    from ultralytics.cfg import DEFAULT_CFG_DICT

    # ultralytics >= 8.4 names precision ``quantize``; older ones ``half``.
    options: dict[str, Any] = {"quantize": 16 if half else None} if "quantize" in DEFAULT_CFG_DICT else {"half": half}
    if fmt == "onnx":
        options["simplify"] = False  # onnxslim is not needed, and ultralytics would pip-install it
    try:
        with warnings.catch_warnings(), no_auto_install():
            # Tracing notes and torch's deprecation of the tracing exporters
            # ultralytics calls: nothing for our user to act on.
            for category in (DeprecationWarning, FutureWarning, torch.jit.TracerWarning):
                warnings.filterwarnings("ignore", category=category, module=r"(torch|ultralytics)\b")
            produced = YOLO(str(weights)).export(
                format=fmt,
                imgsz=list(imgsz),
                device="cpu",
                # Fixed shapes: the fastest graphs, and the ANE needs them. A
                # batching worker needs a free batch dimension; ultralytics
                # then frees height and width too, and aip feeds imgsz.
                dynamic=dynamic_batch,
                nms=False,  # aip runs its own NMS on the raw (1, 4 + nc, N) head output
                verbose=False,
                **options,
            )
    except Exception as error:
        raise RuntimeError(f"ultralytics could not export {weights.name} to {fmt} at {imgsz}: {error}") from error
    return Path(produced)


def _convert_coreml(weights: Path, imgsz: tuple[int, int], half: bool) -> Path:
    """Convert a YOLO ``.pt`` to an ``.mlpackage`` with torch.jit.trace and coremltools.

    Why not ultralytics' Core ML exporter: it gives the model an
    ``ImageType`` input, which coremltools' Python ``predict`` accepts only as
    a PIL image, so every frame would leave aip's preprocessed tensor for a
    PIL round trip; it names the output whatever the trace called it; and it
    tries to pip-install ``numpy<=2.3.5`` when it finds a newer numpy.

    What this makes, and why:

    - Input ``images``: a ``TensorType`` (a multi-array), (1, 3, H, W),
      **float32**: the tensor aip's Numba preprocessing already wrote (RGB,
      letterboxed, scaled to [0, 1]) goes straight in. Not float16:
      coremltools' ``predict`` casts float16 numpy inputs to float32 before
      Core ML sees them (a known workaround in its ``MLModel.predict``), so a
      float16 input would cost one more copy, and the cast to the Neural
      Engine's float16 happens anyway, as the program's first op.
    - Output ``raw_head``: (1, 4 + nc, N) float32, named explicitly; NMS
      stays in aip (``nms=False`` in ultralytics' terms; Detect's export mode
      gives the single concatenated output).
    - An ML Program for macOS 13 or newer, fixed shapes (the ANE wants
      them). ``half``: float16 compute precision, which is what the Neural
      Engine runs; float32 precision keeps the model on the GPU and CPU.
    - The same graph tweaks ultralytics' exporter makes for Core ML: fused
      scaled-dot-product attention, C2f's split forward.
    """
    network = _coreml_network(weights)
    names = network.names if isinstance(network.names, dict) else dict(enumerate(network.names))
    precision = "float16" if half else "float32"
    model = _trace_to_mlprogram(network, weights.name, imgsz, precision)
    model.short_description = f"YOLO raw head for aip: {weights.stem}, {imgsz[0]}x{imgsz[1]}, {precision}"
    model.user_defined_metadata.update({
        COREML_PRECISION_KEY: precision,
        "aip.imgsz": json.dumps(list(imgsz)),
        "aip.names": json.dumps({str(i): names[i] for i in sorted(names)}),
        "aip.input": "RGB letterboxed (1, 3, H, W) float32 in [0, 1]",
    })
    produced = weights.with_suffix(EXPORT_SUFFIXES["coreml"])
    model.save(str(produced))
    return produced


def _trace_to_mlprogram(network: torch.nn.Module, name: str, imgsz: tuple[int, int], precision: str) -> Any:
    """Trace ``network`` on a (1, 3, H, W) float32 input and convert it to an ML Program
    with ``precision`` compute ("float16" or "float32"); RuntimeError if that fails."""
    import coremltools
    import numpy as np
    import torch

    example = torch.zeros((1, 3, *imgsz), dtype=torch.float32)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # torch's deprecation of tracing and the tracer's notes on
            # shape-dependent Python: nothing for our user to act on.
            for category in (DeprecationWarning, FutureWarning, UserWarning, torch.jit.TracerWarning):
                warnings.filterwarnings("ignore", category=category, module=r"(torch|ultralytics|coremltools)\b")
            # coremltools writes the weights into a TemporaryDirectory it lets
            # the garbage collector remove (after copying them into the package).
            warnings.filterwarnings("ignore", category=ResourceWarning, message="Implicitly cleaning up")
            traced = torch.jit.trace(network, example, strict=False, check_trace=False)
            return coremltools.convert(
                traced,
                inputs=[coremltools.TensorType(name=COREML_INPUT, shape=example.shape, dtype=np.float32)],
                outputs=[coremltools.TensorType(name=COREML_OUTPUT, dtype=np.float32)],
                convert_to="mlprogram",
                minimum_deployment_target=coremltools.target.macOS13,
                compute_precision=getattr(coremltools.precision, precision.upper()),
                skip_model_load=True,  # Linux cannot load it; the backend loads it on the Mac
            )
    except Exception as error:
        raise RuntimeError(
            f"coremltools {coremltools.__version__} could not convert {name} at {imgsz} "
            f"(torch {torch.__version__}, numpy {np.__version__}): {error}"
        ) from error


def _coreml_network(weights: Path) -> torch.nn.Module:
    """The checkpoint's network set up for tracing to Core ML: one (1, 4 + nc, N) output."""
    import torch
    from ultralytics.nn.modules import C2f, Detect
    from ultralytics.nn.modules.block import Attention
    from ultralytics.nn.tasks import load_checkpoint

    network, _ = load_checkpoint(str(weights), device=torch.device("cpu"))
    network = network.fuse(verbose=False).eval().float()
    for module in network.modules():
        if isinstance(module, Detect):
            module.export, module.format, module.dynamic, module.shape = True, "coreml", False, None
        elif isinstance(module, Attention):
            module.format = "coreml"  # Core ML's fused attention op, as ultralytics' exporter does
        elif isinstance(module, C2f) and hasattr(module, "forward_split"):
            module.forward = module.forward_split
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    model: torch.nn.Module = network
    return model


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


def exported_imgsz(path: str | Path) -> tuple[int, int] | None:
    """The input ``(height, width)`` an exported model takes, read from the file.

    An ``.onnx`` says it in its input's shape (or, exported with a free
    shape, in the ``imgsz`` metadata ultralytics writes); an ``.mlpackage``
    in the ``aip.imgsz`` metadata aip writes. None for anything else, or a
    file that names no size (or cannot be read: its backend says why).
    """
    model = Path(path).expanduser()
    try:
        if model.suffix.lower() == ".onnx":
            return _onnx_imgsz(model)
        if model.suffix.lower() == EXPORT_SUFFIXES["coreml"]:
            import coremltools

            spec = coremltools.utils.load_spec(str(model))
            return _imgsz_text(dict(spec.description.metadata.userDefined).get("aip.imgsz"))
    except Exception:  # noqa: BLE001 - not readable here (no onnx, a broken file): the caller's default
        return None
    return None


def _onnx_imgsz(model: Path) -> tuple[int, int] | None:
    import onnx

    graph = onnx.load(str(model), load_external_data=False)
    sides = graph.graph.input[0].type.tensor_type.shape.dim[2:]
    if len(sides) == 2 and all(side.HasField("dim_value") for side in sides):
        return (int(sides[0].dim_value), int(sides[1].dim_value))
    return _imgsz_text({prop.key: prop.value for prop in graph.metadata_props}.get("imgsz"))


def _imgsz_text(text: str | None) -> tuple[int, int] | None:
    """``"[480, 640]"`` (as ultralytics and aip write it) -> ``(480, 640)``."""
    if text is None:
        return None
    sides = json.loads(text)
    return (int(sides[0]), int(sides[1])) if isinstance(sides, list) and len(sides) == 2 else None
