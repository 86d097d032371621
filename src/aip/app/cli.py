"""``aip``: run detection on a video across the machine's backends.

    aip run [SOURCE] [--backend SPEC ...] [--mode static|adaptive|pull] ...
    aip backends                 what this machine can run, and why not
    aip doctor [--clean]         backends, versions, devices, shared memory, stale segments
    aip calibrate [SOURCE] [--backend SPEC ...]
    aip export [MODEL] --format onnx|coreml|torchscript [--imgsz HxW] [--half]
    aip bench SUITE ...          same as python -m aip.bench

A backend SPEC is ``NAME[:OPTIONS]``: ``cpu``, ``onnx``, ``cuda:1`` (device
index), ``sim:0.02`` (seconds per frame), or ``NAME:key=value,key=value``
(``cpu:threads=1``, ``cuda:device=0,half=1``).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from aip.backends.base import (
    REGISTRY,
    BackendSpec,
    BackendUnavailable,
    available_backends,
    check_available,
    prepare,
    usable_cores,
)
from aip.app.config import fraction, nonnegative_int, positive_float, positive_int
from aip.io.credentials import install_log_redaction, redact, stream_name
from aip.errors import AipError, SourceError, exit_code, exit_codes_help
from aip.pipeline.streams import POLICIES

if TYPE_CHECKING:
    from aip.pipeline import Pipeline

log = logging.getLogger(__name__)

# What `aip run` uses when no --backend is given: one worker per accelerator
# this machine has, and CPU workers on the cores left over (sim never stands
# in for a real backend).
ACCELERATORS = ("cuda", "mps", "coreml")
# OpenVINO first (one throughput worker for every core left: 1.7x two
# single-thread ONNX Runtime workers here), then ONNX Runtime (about 3x
# torch's speed on a CPU here), then torch.
CPU_BACKENDS = ("openvino", "onnx", "cpu")


def parse_backend(text: str, **defaults: Any) -> BackendSpec:
    """``"sim:0.02"`` / ``"cuda:1"`` / ``"cpu:threads=1"`` -> BackendSpec."""
    name, _, rest = text.partition(":")
    options: dict[str, Any] = dict(defaults)
    if rest and "=" not in rest:
        key = {"sim": "latency_s", "cuda": "device"}.get(name)
        if key is None:
            raise ValueError(f"backend {text!r}: write options as {name}:key=value")
        options[key] = _value(rest)
    elif rest:
        for item in rest.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"backend {text!r}: {item!r} is not key=value")
            options[key.strip()] = _value(value.strip())
    if name == "sim":
        options = {k: v for k, v in options.items() if k not in ("model", "imgsz")}
    return BackendSpec(name, options)


def _value(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def rect_imgsz(frame_hw: tuple[int, int], long_side: int = 640, stride: int = 32) -> tuple[int, int]:
    """The smallest stride-multiple input that holds the frame scaled to ``long_side``.

    A 640x480 frame runs at 480x640, as ultralytics' rect mode does: 25 %
    fewer pixels than 640x640 and the same detections.
    """
    scale = long_side / max(frame_hw)
    return tuple(  # type: ignore[return-value]
        int(-(-round(side * scale) // stride) * stride) for side in frame_hw
    )


def default_specs(options: dict[str, Any], cores: int,
                  skip: Mapping[str, str] | None = None) -> list[BackendSpec]:
    """One worker per accelerator here (every visible NVIDIA GPU), one
    single-threaded CPU worker per usable core left.

    ``skip`` maps backends to leave out (they failed to load) to why.
    """
    reasons = {**available_backends(), **(skip or {})}
    specs = []
    for name in ACCELERATORS:
        if reasons.get(name) is not None:
            continue
        if name == "cuda":
            from aip.backends.torch_backend import cuda_device_count

            specs += [BackendSpec(name, {**options, "device": index})
                      for index in range(max(1, cuda_device_count()))]
        else:
            specs.append(BackendSpec(name, dict(options)))
    if reasons.get("openvino") is None:  # Intel's GPUs and NPUs: each a worker of its own
        from aip.backends.openvino_backend import available_devices

        specs += [BackendSpec("openvino", {**options, "device": device, "hint": "throughput"})
                  for device in available_devices() if not device.startswith("CPU")]
    cpu_name = next((name for name in CPU_BACKENDS if reasons.get(name) is None), None)
    if cpu_name == "openvino":
        # One worker keeps every core left busy with its own requests in flight.
        specs.append(BackendSpec("openvino", {**options, "hint": "throughput"}))
    elif cpu_name is not None:
        # One thread per worker, ONNX Runtime's spin-waiting off: workers
        # share the cores, and a spinning idle thread steals a neighbour's.
        cpu_options = {**options, "threads": 1, **({"spin": False} if cpu_name == "onnx" else {})}
        specs += [BackendSpec(cpu_name, dict(cpu_options)) for _ in range(max(1, cores - len(specs)))]
    if not specs:
        lines = "\n".join(f"  {name}: {reasons[name]}" for name in (*ACCELERATORS, *CPU_BACKENDS))
        raise BackendUnavailable(f"no real backend runs on this machine:\n{lines}")
    return specs


def start_pipeline(args: argparse.Namespace, frame_shape: tuple[int, int, int],
                   **pipeline_options: Any) -> Pipeline:
    """A started Pipeline on the backends of ``args``.

    Backends the user named (``-b``) must all load: any failure is the
    command's error. Without ``-b``, a default backend that fails to
    prepare (export) or load is left out with a warning that says why, and
    the run goes on with the rest (the cores it would have used go to CPU
    workers); it is an error only when none is left.
    """
    from aip.pipeline import Pipeline, WorkerError

    options: dict[str, Any] = {"imgsz": args.imgsz or rect_imgsz((frame_shape[0], frame_shape[1]))}
    if args.model:
        options["model"] = args.model
    if args.backend:
        pipeline = Pipeline([parse_backend(text, **options) for text in args.backend], **pipeline_options)
        pipeline.start(frame_shape)
        return pipeline
    skipped: dict[str, str] = {}
    prepared: dict[str, BackendSpec] = {}  # one export per distinct spec, not one per worker
    while True:
        specs = default_specs(options, usable_cores(), skipped)
        ready: list[BackendSpec] = []
        for spec in specs:
            key = f"{spec.name}:{sorted(spec.options.items())}"
            try:
                if key not in prepared:
                    check_available(spec)
                    prepared[key] = prepare(spec)
            except Exception as error:  # whatever stops one default backend, the others still run
                _skip(skipped, spec.name, f"{type(error).__name__}: {error}")
                break
            ready.append(prepared[key])
        else:
            pipeline = Pipeline(ready, **pipeline_options)
            try:
                pipeline.start(frame_shape)
                return pipeline
            except WorkerError as error:  # start() has closed the pipeline
                if error.worker is None:
                    raise
                _skip(skipped, ready[error.worker].name, str(error).strip().splitlines()[-1])


def _frame_shape(frame: Any) -> tuple[int, int, int]:
    height, width, channels = frame.shape
    return (int(height), int(width), int(channels))


def _skip(skipped: dict[str, str], name: str, reason: str) -> None:
    skipped[name] = f"failed to load: {reason}"
    log.warning("leaving out the %s backend, which failed to load (%s); running on the others. "
                "Name the backends with -b to make such a failure an error", name, reason)


def _imgsz(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        if len(parts) == 1:
            return int(parts[0]), int(parts[0])
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"write one size or HxW, e.g. 640 or 480x640; got {text!r}")


def cmd_backends(args: argparse.Namespace) -> int:
    for name, reason in available_backends().items():
        print(f"{name:8} {'available' if reason is None else 'unavailable: ' + reason}")
    from aip.app.doctor import openvino_devices_line

    print(openvino_devices_line())
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from aip.app.doctor import main as doctor_main

    return doctor_main(clean=args.clean)


def read_streams_file(path: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Sources from a file, one a line, each with optional ``key=value``
    options after it (``rtsp://cam/1 name=door priority=2``: the keys of a
    config file's ``[[streams]]`` table); blank lines and ``#`` comments
    skipped. Returns the sources and their ``add_stream`` options."""
    from aip.app.config import stream_tables

    tables: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            table: dict[str, Any] = {"source": words[0]}
            for word in words[1:]:
                key, sep, value = word.partition("=")
                if not sep:
                    raise ValueError(f"{path}:{number}: {word!r}: write options as key=value")
                table[key] = _number_or_text(value)
            tables.append(table)
    if not tables:
        raise ValueError(f"{path} names no source (one per line)")
    return stream_tables(path, tables)


def _number_or_text(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def cmd_run(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from aip.app.observe import MetricsServer, ProgressDisplay
    from aip.io.sinks import AnnotatedVideoSink, JsonLinesSink
    from aip.io.sources import open_source

    per_stream: list[dict[str, Any]] = list(getattr(args, "stream_options", []))  # a config's [[streams]]
    per_stream += [{} for _ in range(len(args.sources) - len(per_stream))]
    specs = list(args.sources)
    if args.streams:
        listed, listed_options = read_streams_file(args.streams)
        specs += listed
        per_stream += listed_options
    specs = specs or ["sample"]
    if args.cluster:
        return cmd_run_cluster(args, specs)
    if args.video and len(specs) > 1:
        raise ValueError("--video writes one annotated video: give it one source")
    sinks: list[Any] = []
    with ExitStack() as opened:
        # Listening before any worker starts: a busy port fails at once, and
        # /healthz answers "starting" while the models load.
        server = (opened.enter_context(MetricsServer(args.metrics_port, args.metrics_host))
                  if args.metrics_port else None)
        # Opened here, so that a wrong path or a dead camera fails before any
        # worker starts; the pipeline reopens a stream from its spec if it fails.
        sources = [opened.enter_context(source) for source in open_sources(specs, args)]
        shapes = [tuple(source.shape) for source in sources]
        largest = (max(h for h, _, _ in shapes), max(w for _, w, _ in shapes), 3)
        first = sources[0]
        frame = first.peek() if hasattr(first, "peek") else None
        if frame is None:
            frame = np.zeros(shapes[0], np.uint8)
        target_fps = args.fps
        with start_pipeline(args, shapes[0], mode=args.mode, target_fps=target_fps,
                            on_full=args.on_full, max_age_ms=args.max_age_ms,
                            latency_budget_ms=args.latency_budget_ms, max_frame_shape=largest, stream_timeout_s=args.stream_timeout,
                            max_reconnects=None if args.reconnect_forever else args.max_reconnects,
                            restart_workers=args.restart_workers,
                            conf=args.conf, iou=args.iou, keep_frames=bool(args.video)) as pipeline:

            def say(text: str) -> None:
                if not args.quiet:
                    print(text, file=sys.stderr)

            if server is not None:
                server.watch(pipeline)
                say(f"metrics: {server.url}/metrics  health: {server.url}/healthz")
            say("workers: " + ", ".join(f"{label} ({spec.options})" for label, spec in
                                        zip(pipeline.labels, pipeline.specs)))
            if args.mode != "pull" and len(pipeline.specs) > 1:
                calibration = pipeline.calibrate(frame, refresh=args.recalibrate)
                how = ("cached, a probe confirmed it" if calibration.source == "cache"
                       else "measured now" + (", not cached" if calibration.problems else ""))
                say(f"weights {dict(zip(pipeline.labels, pipeline.weights))}, calibrated "
                    f"together {calibration.ideal_fps:.1f} FPS ({how})")
            names = default_stream_names(specs, per_stream)
            priorities = _priorities(args.priority or [], specs, names)
            for index, (spec, source) in enumerate(zip(specs, sources)):
                fps = source.fps if args.realtime and source.fps else None
                options = {"name": names[index], "fps": fps, "max_frames": args.frames,
                           **({"priority": priorities[index]} if index in priorities else {}),
                           **(per_stream[index] if index < len(per_stream) else {})}
                pipeline.add_stream(source, reopen=spec, **options)
            say(_policies_line(pipeline, args.on_full))
            if args.jsonl:
                sinks.append(JsonLinesSink(args.jsonl))
            if args.video:
                sinks.append(AnnotatedVideoSink(args.video, fps=first.fps or 30.0,
                                                size=(shapes[0][1], shapes[0][0])))
            try:
                with ProgressDisplay(pipeline, quiet=args.quiet), \
                        _DrainOnSignals(pipeline, args.drain_timeout) as signals:
                    for result in pipeline.run():
                        for sink in sinks:
                            sink.write(result)
            finally:
                for sink in sinks:
                    sink.close()
                print(pipeline.metrics.format_table())  # its stream names redacted
    efficiency = pipeline.metrics.scheduling_efficiency
    if efficiency is not None and efficiency > 1.1:
        print("aip: the cached calibration undersells this machine (measured under other load?): "
              "run with --recalibrate", file=sys.stderr)
    if args.metrics_json:
        with open(args.metrics_json, "w", encoding="utf-8") as out:
            out.write(pipeline.metrics.to_json() + "\n")
    if args.plot:
        pipeline.metrics.plot(args.plot)
    return 128 + signals.received if signals.received else 0


def default_stream_names(specs: Sequence[str], per_stream: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Each source's stream name: the ``name`` its config table gives, else
    :func:`aip.io.credentials.stream_name` (``10.0.0.5:554/stream1``, ``clip.mp4``,
    ``camera0``: never a URL's user, password or query), distinct from the others."""
    given = [per_stream[i].get("name") if i < len(per_stream) else None for i in range(len(specs))]
    taken = [str(name) for name in given if name is not None]
    names: list[str] = []
    for spec, name in zip(specs, given):
        if name is None:
            name = stream_name(spec, taken)
            taken.append(name)
        names.append(str(name))
    return names


def cmd_run_cluster(args: argparse.Namespace, specs: list[str]) -> int:
    """``aip run ... --cluster tcp://HOST:8786``: the same run over a Dask cluster's nodes."""
    from aip.cluster import Cluster
    from aip.io.sinks import JsonLinesSink
    from aip.io.sources import open_source

    if not args.backend:
        raise ValueError("--cluster needs the backends of each node: -b SPEC (repeat for more), "
                         "e.g. -b onnx:threads=1 -b onnx:threads=1")
    shapes = []
    for spec in specs:  # the slots' size; a source only the nodes can open gets 1080p slots
        try:
            with open_source(spec) as source:
                shapes.append(tuple(source.shape))
        except (OSError, ValueError, RuntimeError):
            shapes.append((1080, 1920, 3))
    largest = (max(h for h, _, _ in shapes), max(w for _, w, _ in shapes), 3)
    options: dict[str, Any] = {"imgsz": args.imgsz or rect_imgsz((largest[0], largest[1]))}
    if args.model:
        options["model"] = args.model
    backends = [parse_backend(text, **options) for text in args.backend]
    sink = JsonLinesSink(args.jsonl) if args.jsonl else None
    with Cluster(args.cluster, backends, max_frame_shape=largest, encoding=args.cluster_encoding,
                 pipeline_options={"mode": args.mode, "conf": args.conf, "iou": args.iou}) as cluster:
        if not args.quiet:
            print("nodes: " + ", ".join(f"{name} ({fps:.1f} FPS)" for name, fps in
                                        cluster.calibration.items()), file=sys.stderr)
        try:
            for result in cluster.run(specs, mode=args.cluster_mode, max_frames=args.frames):
                if sink is not None:
                    sink.write(result)
        finally:
            if sink is not None:
                sink.close()
            print(cluster.metrics.format_table())
    if args.metrics_json:
        with open(args.metrics_json, "w", encoding="utf-8") as out:
            out.write(cluster.metrics.to_json() + "\n")
    return 0


class _DrainOnSignals:
    """SIGTERM and SIGINT drain the run instead of killing it: the streams
    stop, the frames in flight finish (at most ``timeout_s``) and come out in
    order, and the caller then closes its sinks, prints its summary and exits
    with 128 + the signal (143, 130). A second signal exits at once."""

    def __init__(self, pipeline: Any, timeout_s: float) -> None:
        self.pipeline = pipeline
        self.timeout_s = timeout_s
        self.received = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _DrainOnSignals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:
            os._exit(128 + signum)  # the second signal: at once (workers follow their manager)
        self.received = signum
        print(f"aip: {signal.Signals(signum).name}: draining the frames in flight (at most "
              f"{self.timeout_s:g} s; a second signal exits at once)", file=sys.stderr)
        self.pipeline.drain(self.timeout_s)


# Cameras opened at once at the start of a run: each open waits up to a
# frame period for the camera's first frame, one after the other 100 cameras
# at 1 FPS would take a minute and a half to start.
OPEN_THREADS = 32


def open_sources(specs: Sequence[str], args: argparse.Namespace) -> list[Any]:
    """Every source, opened side by side; the first failure (after the
    others are closed again) as a :class:`SourceError`."""
    from concurrent.futures import ThreadPoolExecutor

    from aip.io.sources import close_quietly

    attempts = None if args.reconnect_forever else args.max_reconnects
    with ThreadPoolExecutor(max_workers=max(1, min(OPEN_THREADS, len(specs)))) as pool:
        futures = [pool.submit(_open_source, spec, args.stream_timeout, attempts) for spec in specs]
    sources, failure = [], None
    for future in futures:
        try:
            sources.append(future.result())
        except BaseException as error:  # noqa: BLE001 - raised below, once the rest are closed
            failure = failure or error
    if failure is not None:
        for source in sources:
            close_quietly(source)
        raise failure
    return sources


def _open_source(spec: str, timeout_s: float, max_reconnects: int | None) -> Any:
    """``open_source(spec)``; any failure is a SourceError that names the source.

    A camera or stream URL is opened under the policy its stream keeps for
    every reopen: ``timeout_s`` per try, ``max_reconnects`` more tries
    (None: forever) with the same back-off.
    """
    from aip.pipeline.streams import reconnect_delay
    from aip.io.sources import STREAM_SCHEMES, open_source

    is_stream = spec.isdigit() or spec.lower().startswith(STREAM_SCHEMES)
    failures = 0
    while True:
        try:
            if is_stream:
                return open_source(spec, read_timeout_s=timeout_s, reconnect_attempts=0)
            return open_source(spec)
        except ConnectionError as error:
            failures += 1
            if max_reconnects is not None and failures > max_reconnects:
                raise SourceError(f"{error} (tried {failures} times): check the address and that "
                                  "the camera or server is up (--stream-timeout S waits longer, "
                                  "--max-reconnects N tries more)") from error
            delay = reconnect_delay(0.5, failures)
            log.warning("%s; trying again in %.1f s", redact(str(error)), delay)
            time.sleep(delay)
        except (OSError, ValueError, RuntimeError) as error:
            raise SourceError(str(error)) from error


def _priorities(given: Sequence[str], specs: Sequence[str], names: Sequence[str]) -> dict[int, float]:
    """``--priority STREAM=W`` (a stream's name, its source as given, or its
    position from 0) -> ``{index: W}``."""
    priorities: dict[int, float] = {}
    for text in given:
        key, sep, value = text.rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = 0.0
        if not sep or not weight > 0:
            raise ValueError(f"--priority {text!r}: write STREAM=W with W > 0, e.g. door=2")
        matches = [i for i, (spec, name) in enumerate(zip(specs, names))
                   if key in (spec, name, str(i))]
        if not matches:
            raise ValueError(f"--priority {redact(text)!r}: no stream named {redact(key)!r}; "
                             f"the streams are {', '.join(redact(n) for n in names)}")
        for index in matches:
            priorities[index] = weight
    return priorities


def _policies_line(pipeline: Any, on_full: str | None) -> str:
    """Which policy each stream got (live sources ``latest``, files ``block``,
    unless ``--on-full`` or its own options say otherwise)."""
    by_policy: dict[str, list[str]] = {}
    for name, policy in pipeline.stream_policies().items():
        by_policy.setdefault(policy, []).append(redact(name))
    parts = []
    for policy, names in by_policy.items():
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} streams)" if len(names) > 6 else "")
        parts.append(f"{policy}: {shown}")
    how = "--on-full" if on_full else "by source: live latest, files block"
    return f"policy ({how}) " + "; ".join(parts)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from aip.pipeline.calibration_cache import cached_entries, default_cache_path, format_result
    from aip.io.sources import open_source

    if args.show:
        path = default_cache_path()
        entries = cached_entries(path)
        if not entries:
            print(f"no calibration cached in {path}")
        for key, result in entries:
            measured = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(result.timestamp))
            size = "x".join(str(n) for n in reversed(key.get("input_size", [])))
            print(f"model {key.get('model')}, {size} frames, measured {measured} on "
                  f"{key.get('machine')}\n{format_result(result)}\n")
        return 0
    with open_source(args.source) as source:
        first = next(iter(source), None)
    if first is None:
        raise ValueError(f"source {args.source!r} has no frames")
    frame = first[0] if isinstance(first, tuple) else first
    with start_pipeline(args, _frame_shape(frame)) as pipeline:
        result = pipeline.calibrate(frame, refresh=True, seconds=args.seconds)
    print(format_result(result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from aip.vision.models import export

    for fmt in args.format:
        path = export(args.model, fmt, args.imgsz or (640, 640), half=args.half)
        print(f"{fmt}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aip", description=__doc__, epilog=exit_codes_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def backend_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--backend", "-b", action="append", metavar="SPEC",
                         help="a worker (repeat for more); default: every real backend available")
        sub.add_argument("--model", help="yolo11n.pt, an exported model, or a .yaml "
                         "(default: yolo11n.yaml, seeded random weights)")
        sub.add_argument("--imgsz", type=_imgsz, help="network input, e.g. 640 or 480x640")

    run = commands.add_parser("run", help="detect objects in one or many sources")
    run.add_argument("sources", nargs="*", metavar="SOURCE",
                     help="video file, image folder, camera index, rtsp:// or http(s):// URL, "
                     "synthetic[:WxH], or sample[:FRAMES]; several run as streams side by side "
                     "(default: a 120-frame video made from ultralytics' bundled photos)")
    run.add_argument("--streams", metavar="FILE", help="more sources, one per line")
    run.add_argument("--config", metavar="FILE",
                     help="read these flags from a TOML file (see the README); flags given here win")
    backend_options(run)
    run.add_argument("--mode", choices=("static", "adaptive", "pull"), default="adaptive",
                     help="static: the calibrated weighted cycle; adaptive (default): that "
                     "cycle, re-weighted from measured service times (a slowed or restarted "
                     "worker is measured again); pull: any idle worker takes the next frame")
    run.add_argument("--fps", type=positive_float, help="pace input to this many frames per second")
    run.add_argument("--realtime", action="store_true", help="pace each stream to its source's own rate")
    run.add_argument("--on-full", choices=POLICIES, default=None,
                     help="when the workers are busy: every stream's policy (default by source: "
                     "latest for a camera or stream, only its freshest frame waits; block for a "
                     "file or folder, lose nothing)")
    run.add_argument("--priority", action="append", metavar="STREAM=W",
                     help="a stream's share of the workers under overload against the others' "
                     "(default 1; STREAM is its name, its source or its position from 0); repeat")
    run.add_argument("--latency-budget-ms", type=positive_float, metavar="MS",
                     help="capture -> result: a frame goes only to a worker predicted to finish "
                     "it in time; one that none can is skipped (late) before inference")
    run.add_argument("--max-age-ms", type=positive_float, metavar="MS",
                     help="skip (count as late) a frame older than this when a worker would take it")
    run.add_argument("--restart-workers", action="store_true",
                     help="restart a worker that dies, with back-off (at most 3 times a minute)")
    run.add_argument("--drain-timeout", type=positive_float, default=10.0, metavar="S",
                     help="on SIGTERM or Ctrl-C, wait this long for the frames in flight (default 10)")
    run.add_argument("--stream-timeout", type=positive_float, default=10.0, metavar="S",
                     help="a stream that gives no frame for this long is reconnected (default 10)")
    run.add_argument("--max-reconnects", type=nonnegative_int, default=3, metavar="N",
                     help="tries after a camera or stream fails, at the first open and every "
                     "reopen, with back-off (0.5 s doubling to 30 s), before it is evicted "
                     "(default 3)")
    run.add_argument("--reconnect-forever", action="store_true",
                     help="never evict a camera: keep reconnecting with back-off")
    run.add_argument("--frames", type=positive_int, help="stop each stream after this many frames")
    run.add_argument("--conf", type=fraction, default=0.25, help="confidence threshold, 0-1")
    run.add_argument("--iou", type=fraction, default=0.7, help="NMS IoU threshold, 0-1")
    run.add_argument("--recalibrate", action="store_true", help="measure again, ignore the cache")
    run.add_argument("--jsonl", metavar="PATH", help="write one JSON line per frame")
    run.add_argument("--video", metavar="PATH", help="write an annotated video")
    run.add_argument("--metrics-json", metavar="PATH", help="write the run's metrics as JSON")
    run.add_argument("--plot", metavar="PATH", help="save latency and FPS plots (PNG, needs matplotlib)")
    run.add_argument("--quiet", "-q", action="store_true",
                     help="no progress display and no start-up lines (warnings, errors and the "
                     "final report still print); the display is a live table on a terminal, "
                     "else one line every 5 s on stderr")
    run.add_argument("--metrics-port", type=int, default=0, metavar="N",
                     help="serve Prometheus metrics on http://HOST:N/metrics and health on "
                     "/healthz (200 ready or backpressure; 503 starved, stalled or idle); "
                     "default 0: off")
    run.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                     help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 for every interface)")
    run.add_argument("--cluster", metavar="ADDRESS",
                     help="run on the nodes of a Dask cluster, e.g. tcp://HOST:8786 (needs aip[cluster]; "
                     "-b gives each node's backends; see the README, \"Scale-out\")")
    run.add_argument("--cluster-mode", choices=("streams", "frames"), default="streams",
                     help="streams: whole streams per node, which open the sources themselves "
                     "(default); frames: this machine reads and spreads the frames")
    run.add_argument("--cluster-encoding", choices=("raw", "jpeg"), default="raw",
                     help="how frames travel in frames mode (default raw)")
    run.set_defaults(handler=cmd_run)

    backends = commands.add_parser("backends", help="which backends run here, and why not")
    backends.set_defaults(handler=cmd_backends)

    doctor = commands.add_parser("doctor", help="what this machine can run; stale shared memory")
    doctor.add_argument("--clean", action="store_true",
                        help="remove aip segments whose creator process is gone")
    doctor.set_defaults(handler=cmd_doctor)

    calibrate = commands.add_parser("calibrate", help="measure the backends, store weights")
    calibrate.add_argument("source", nargs="?", default="sample",
                           help="where the representative frame comes from (as for run)")
    backend_options(calibrate)
    calibrate.add_argument("--seconds", type=float, default=3.0, help="per measurement phase")
    calibrate.add_argument("--show", action="store_true",
                           help="print what is cached and when it was measured; measure nothing")
    calibrate.set_defaults(handler=cmd_calibrate)

    export = commands.add_parser("export", help="export a model for runtimes (cached)")
    export.add_argument("model", nargs="?", help="a .pt or .yaml (default: seeded yolo11n.yaml)")
    export.add_argument("--format", "-f", action="append", choices=("onnx", "coreml", "torchscript"),
                        required=True, help="repeat for several")
    export.add_argument("--imgsz", type=_imgsz, help="network input, e.g. 640 or 480x640")
    export.add_argument("--half", action="store_true", help="float16 weights")
    export.set_defaults(handler=cmd_export)

    bench = commands.add_parser("bench", help="python -m aip.bench", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=lambda args: _bench(args.rest))
    return parser


def _bench(rest: Sequence[str]) -> int:
    from aip.bench.__main__ import main as bench_main

    return bench_main(list(rest))


def main(argv: Sequence[str] | None = None) -> int:
    """``aip ...``: the exit code says how it ended (see :mod:`aip.errors`)."""
    logging.basicConfig(level=logging.WARNING, format="aip: %(message)s")
    install_log_redaction()  # what aip logs names sources: never with their passwords
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "config", None):
            from aip.app.config import apply

            args = apply(args, argv, build_parser)
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("aip: interrupted", file=sys.stderr)
        return exit_code(KeyboardInterrupt())
    except Exception as error:  # every error ends as one line and its documented code
        # Redacted: a source's error quotes its URL, password and all.
        print(f"aip: error: {redact(_describe(error))}", file=sys.stderr)
        if os.environ.get("AIP_TRACEBACK"):
            import traceback

            # a worker's own traceback is in the message, printed here too
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
        return exit_code(error)


# What a person can act on; anything else is a bug in aip, reported as one.
_EXPECTED = (AipError, BackendUnavailable, OSError, ValueError, RuntimeError, TimeoutError)


def _describe(error: Exception) -> str:
    if isinstance(error, ModuleNotFoundError):
        return (f"{error.name} is not installed; the full set: "
                "pip install 'aip[torch,onnx,ultralytics,video,observe]'")
    text = str(error)
    if "\nTraceback (most recent call last):" in text:  # a worker's traceback, sent back as text
        lines = [line for line in text.splitlines() if line.strip()]
        return (f"{lines[0].rstrip(':')}: {lines[-1].strip()}"
                + ("" if os.environ.get("AIP_TRACEBACK") else " (AIP_TRACEBACK=1 shows its traceback)"))
    if isinstance(error, _EXPECTED):
        return text or type(error).__name__
    return (f"internal error {type(error).__name__}: {error} (a bug in aip: run again with "
            "AIP_TRACEBACK=1 and report what it prints)")
