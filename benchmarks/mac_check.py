"""The Mac table: aip on the Neural Engine, the GPU and the CPU, alone and together, vs ultralytics.

    python benchmarks/mac_check.py --out DIR [--frames N] [--model yolo11n.pt] [--dry-run]

Run by ``benchmarks/mac_check.sh`` after the macOS test set. On the sample
video (640x480; the same model and 480x640 input throughout):

- aip on ``coreml`` (ANE), on ``mps`` (GPU) and on the CPU workers a default
  run takes, each alone, then all together as ``aip run`` starts them
  (calibrated, static): FPS, end-to-end p50 / p99, and the calibration's
  alone / together frames per second and weights of each backend;
- ultralytics ``predict(stream=True)`` on its own Core ML export (the
  ``.mlpackage`` of ``export(format="coreml", nms=False)``) and on the
  ``.pt`` on ``mps``, on the same video;
- the Mac's model and macOS version.

Writes ``DIR/mac_check.json`` and ``DIR/table.md``. ``--dry-run`` runs on a
machine without the Apple backends (Linux): the accelerator rows and the
Core ML prediction are left out (the Core ML export still runs), so that
everything up to the Mac-only steps is known to work.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ["system", "config", "fps", "p50_ms", "p99_ms", "infer_p50_ms"]
CALIBRATION_COLUMNS = ["backend", "alone_fps", "together_fps", "weight"]
IMGSZ = (480, 640)  # the stride-32 input of a 640x480 frame, as `aip run` picks it


def mac_model() -> dict[str, str]:
    """The Mac's model, chip and macOS version (on another system: what it is)."""
    def sysctl(key: str) -> str:
        try:
            return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    info = {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version(),
            "cores": str(os.cpu_count())}
    if sys.platform == "darwin":
        info |= {"model": sysctl("hw.model"), "chip": sysctl("machdep.cpu.brand_string"),
                 "macos": platform.mac_ver()[0], "memory_gb": f"{int(sysctl('hw.memsize') or 0) / 2**30:.0f}",
                 "performance_cores": sysctl("hw.perflevel0.physicalcpu"),
                 "efficiency_cores": sysctl("hw.perflevel1.physicalcpu")}
    else:
        info |= {"platform": platform.platform(), "processor": platform.processor()}
    return info


def run_aip(specs: list[Any], video: Path, label: str, conf: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One pipeline on the video: its row, and the calibration of its backends (static, calibrated)."""
    from aip.bench.yolo import WARMUP_FRAMES, _latency_row
    from aip.pipeline import Pipeline
    from aip.results import FrameResult
    from aip.io.sources import VideoFileSource

    calibration_rows: list[dict[str, Any]] = []
    with VideoFileSource(video) as source, Pipeline(specs, mode="static", conf=conf) as pipeline:
        frames = iter(source)
        first, _ = next(frames)
        calibration = pipeline.calibrate(first, refresh=True) if len(specs) > 1 else None
        results = [r for r in pipeline.run(frames) if isinstance(r, FrameResult)]
        if calibration is not None:
            for key, label_ in zip(calibration.together_fps, pipeline.labels):
                calibration_rows.append({"pipeline": label, "backend": label_,
                                         "alone_fps": calibration.alone_fps[key],
                                         "together_fps": calibration.together_fps[key],
                                         "weight": calibration.weights.get(key, 0)})
        devices = sorted({r.backend for r in results})
    steady = results[WARMUP_FRAMES:]
    span = (steady[-1].t_done_ns - steady[0].t_done_ns) / 1e9
    row = _latency_row("aip", label, (len(steady) - 1) / span, np.array([r.end_to_end_ms for r in steady]),
                       infer_p50_ms=float(np.percentile([r.inference_ms for r in steady], 50)),
                       backends_used=devices)
    if calibration is not None:
        row["calibrated_fps"] = calibration.ideal_fps
        row["efficiency"] = row["fps"] / calibration.ideal_fps
    return row, calibration_rows


def ultralytics_coreml_export(weights: Path, out: Path) -> Path:
    """ultralytics' own Core ML export (ImageType input, no NMS) into ``out``, never installing anything."""
    import shutil

    from ultralytics import YOLO

    from aip.vision.models import no_auto_install

    out.mkdir(parents=True, exist_ok=True)
    copy = out / weights.name  # ultralytics writes beside the weights it loaded
    shutil.copyfile(weights, copy)
    with no_auto_install(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Path(YOLO(str(copy)).export(format="coreml", nms=False, imgsz=list(IMGSZ), device="cpu",
                                              verbose=False))


def run(frames: int, model: str | None, dry_run: bool, out: Path) -> dict[str, Any]:
    from aip.backends import BackendSpec
    from aip.bench.yolo import CONF, ultralytics_predict
    from aip.app.cli import default_specs
    from aip.vision.models import RandomWeightsWarning, export, resolve_model
    from aip.io.samples import sample_video

    warnings.simplefilter("ignore", RandomWeightsWarning)  # said once below instead
    source = resolve_model(model)
    document: dict[str, Any] = {"machine": mac_model(), "model": source.name,
                                "random_weights": source.random_weights, "dry_run": dry_run,
                                "video": {"frames": frames, "size": "640x480"}, "imgsz": list(IMGSZ),
                                "results": [], "calibration": [], "skipped": []}
    if source.random_weights:
        print("model: yolo11n.yaml with seeded random weights: detections are meaningless, "
              "throughput is real", flush=True)
    video = sample_video(frames)
    options = {"model": str(source.path), "imgsz": IMGSZ}
    cores = os.cpu_count() or 1

    def add(row: dict[str, Any], calibration: list[dict[str, Any]] | None = None) -> None:
        from aip.bench.report import format_table

        document["results"].append(row)
        document["calibration"].extend(calibration or [])
        print(format_table([row], COLUMNS).splitlines()[-1], flush=True)

    # What `aip run` takes here: on a Mac coreml + mps + one CPU worker per core left.
    together = default_specs(options, cores)
    accelerators = [spec for spec in together if spec.name in ("coreml", "mps")]
    cpu_workers = [spec for spec in together if spec.name not in ("coreml", "mps")]
    if not dry_run:
        missing = {"coreml", "mps"} - {spec.name for spec in accelerators}
        if missing:
            raise SystemExit(f"mac_check: {', '.join(sorted(missing))} not available here; "
                             "`aip backends` says why")
    for spec in accelerators:
        add(*run_aip([spec], video, f"{spec.name} alone", CONF))
    add(*run_aip(cpu_workers, video, f"cpu alone: {len(cpu_workers)} x {cpu_workers[0].name} 1 thread", CONF))
    if accelerators:
        add(*run_aip(together, video, "all together: " + " + ".join(s.name for s in together), CONF))

    mlpackage = ultralytics_coreml_export(source.path, out / "ultralytics")
    document["ultralytics_coreml_export"] = mlpackage.name
    if sys.platform == "darwin":
        add(ultralytics_predict(mlpackage, video, IMGSZ, "Core ML export (.mlpackage, nms=False) 480x640"))
        add(ultralytics_predict_on(source.path, video, "mps", ".pt on mps, imgsz 640 (rect 480x640)"))
    else:
        document["skipped"].append("ultralytics predict on its Core ML export: Core ML predicts on macOS only")
        onnx = export(source, "onnx", IMGSZ)
        add(ultralytics_predict(onnx, video, IMGSZ, ".onnx 480x640 (stand-in on this machine)"))
    return document


def ultralytics_predict_on(weights: Path, video: Path, device: str, label: str) -> dict[str, Any]:
    from aip.bench.yolo import ultralytics_predict

    return ultralytics_predict(weights, video, (640, 640), label, device=device)


def markdown(document: dict[str, Any]) -> str:
    from aip.bench.report import format_table

    machine = document["machine"]
    title = (f"{machine.get('model', machine['system'])} ({machine.get('chip', machine['machine'])}), "
             f"macOS {machine['macos']}" if "macos" in machine else
             f"{machine['platform']} (dry run: not a Mac)")
    lines = [f"# aip mac check: {title}", "",
             f"YOLO model {document['model']}{' (seeded random weights)' if document['random_weights'] else ''}, "
             f"{document['video']['frames']}-frame 640x480 video, input {IMGSZ[0]}x{IMGSZ[1]}; "
             "FPS after a warm-up, latency per frame in ms (aip: capture to ordered result, unpaced).", "",
             format_table(document["results"], COLUMNS), ""]
    if document["calibration"]:
        lines += ["Calibration (frames/s of each backend alone and all together; weights from together):", "",
                  format_table(document["calibration"], ["pipeline", *CALIBRATION_COLUMNS]), ""]
    for row in document["results"]:
        if "efficiency" in row:
            lines.append(f"{row['config']}: {100 * row['efficiency']:.0f} % of the calibrated "
                         f"{row['calibrated_fps']:.1f} FPS")
    lines += [f"Left out: {item}" for item in document["skipped"]]
    lines += ["", "Machine: " + json.dumps(machine)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument("--frames", type=int, default=300, help="frames of the sample video")
    parser.add_argument("--model", help="yolo11n.pt or another .pt (default: seeded yolo11n.yaml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="not a Mac: leave out the Apple backends and Core ML prediction")
    args = parser.parse_args(argv)
    if sys.platform != "darwin" and not args.dry_run:
        parser.error("this is not a Mac: pass --dry-run to run what can run here")
    args.out.mkdir(parents=True, exist_ok=True)
    document = run(args.frames, args.model, args.dry_run, args.out)
    (args.out / "mac_check.json").write_text(json.dumps(document, indent=2) + "\n")
    table = markdown(document)
    (args.out / "table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
