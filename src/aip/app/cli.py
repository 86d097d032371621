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
    BackendSpec,
    BackendUnavailable,
    available_backends,
    check_available,
    prepare,
    usable_cores,
)
from aip.app.config import fraction, nonnegative_int, positive_float, positive_int
from aip.io.credentials import install_log_redaction, redact, stream_name
from aip.errors import AipError, SourceError, UsageError, exit_code, exit_codes_help
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

    options = _model_options(args, (frame_shape[0], frame_shape[1]))
    if args.backend:
        pipeline = Pipeline(named_backends(args, options), **pipeline_options)
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


def input_size(args: argparse.Namespace, frame_hw: tuple[int, int]) -> tuple[int, int]:
    """The network input: ``--imgsz``; else the size an exported ``--model``
    was made for (it takes no other); else the smallest that holds the frames."""
    if args.imgsz:
        height, width = args.imgsz
        return (int(height), int(width))
    return _exported_size(args.model) or rect_imgsz(frame_hw)


def _exported_size(model: Any) -> tuple[int, int] | None:
    from aip.vision.models import exported_imgsz

    return exported_imgsz(str(model)) if model else None


def _model_options(args: argparse.Namespace, frame_hw: tuple[int, int]) -> dict[str, Any]:
    """The options every backend of a run shares: its input size and model."""
    options: dict[str, Any] = {"imgsz": input_size(args, frame_hw)}
    if args.model:
        options["model"] = args.model
    return options


def named_backends(args: argparse.Namespace, options: Mapping[str, Any]) -> list[BackendSpec]:
    """The ``-b`` specs, each with the run's ``options`` under its own. A spec
    that names an exported model of its own, and no ``imgsz``, takes the
    model's input size unless ``--imgsz`` was given."""
    specs = []
    for text in args.backend:
        spec = parse_backend(text, **options)
        own = parse_backend(text).options
        size = None if args.imgsz or "imgsz" in own else _exported_size(own.get("model"))
        specs.append(BackendSpec(spec.name, {**spec.options, "imgsz": size}) if size else spec)
    return specs


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
    """``aip run``: every source a stream, on this machine's workers (or a cluster's nodes)."""
    from contextlib import ExitStack

    from aip.app.observe import MetricsServer

    specs, per_stream = run_sources(args)
    given = given_flags(args)
    if args.cluster:
        check_cluster_flags(args, given, per_stream)
        return cmd_run_cluster(args, specs)
    check_local_flags(args, given, specs)
    names = default_stream_names(specs, per_stream)
    priorities = _priorities(args.priority or [], specs, names)
    with ExitStack() as opened:
        # Listening before any worker starts: a busy port fails at once, and
        # /healthz answers "starting" while the models load.
        server = (opened.enter_context(MetricsServer(args.metrics_port, args.metrics_host, streams=names))
                  if args.metrics_port else None)
        web = opened.enter_context(_web_server(args, names)) if args.serve else None
        # Opened here, so that a wrong path or a dead camera fails before any
        # worker starts; the pipeline reopens a stream from its spec if it fails.
        sources = [opened.enter_context(source) for source in open_sources(specs, args)]
        shapes = [tuple(source.shape) for source in sources]
        frame = _calibration_frame(sources[0], shapes[0])
        pipeline = opened.enter_context(start_pipeline(
            args, shapes[0], **_pipeline_options(args, shapes, per_stream)))
        if server is not None:
            server.watch(pipeline)
            _say(args, f"metrics: {server.url}/metrics  health: {server.url}/healthz")
        if web is not None:
            web.watch(pipeline)
        _calibrate_run(args, pipeline, frame)
        for index, (spec, source) in enumerate(zip(specs, sources)):
            fps = source.fps if args.realtime and source.fps else None
            options = {"name": names[index], "fps": fps, "max_frames": args.frames,
                       **({"priority": priorities[index]} if index in priorities else {}),
                       **(per_stream[index] if index < len(per_stream) else {})}
            pipeline.add_stream(source, reopen=spec, **options)
        _say(args, _policies_line(pipeline, args.on_full))
        sinks = _open_sinks(args, sources[0], shapes[0])
        for observer in (server, web):  # both /metrics report the remote sinks
            if observer is not None:
                observer.collector.sinks = [sink for sink in sinks if hasattr(sink, "stats")]
        received = _deliver(args, pipeline, sinks + ([web.live] if web is not None else []))
    efficiency = pipeline.metrics.scheduling_efficiency
    if efficiency is not None and efficiency > 1.1:
        print("aip: the cached calibration undersells this machine (measured under other load?): "
              "run with --recalibrate", file=sys.stderr)
    _write_metrics(args, pipeline.metrics)
    return 128 + received if received else 0


def run_sources(args: argparse.Namespace) -> tuple[list[str], list[dict[str, Any]]]:
    """The run's sources (given, then ``--streams``; the sample without any)
    and the ``add_stream`` options of each (a config's ``[[streams]]`` table's,
    a streams file line's; ``{}`` for the rest)."""
    per_stream: list[dict[str, Any]] = list(getattr(args, "stream_options", []))
    per_stream += [{} for _ in range(len(args.sources) - len(per_stream))]
    specs = list(args.sources)
    if args.streams:
        listed, listed_options = read_streams_file(args.streams)
        specs += listed
        per_stream += listed_options
    return specs or ["sample"], per_stream


def _say(args: argparse.Namespace, text: str) -> None:
    """A start-up line on stderr, unless ``--quiet``."""
    if not args.quiet:
        print(text, file=sys.stderr)


def _calibration_frame(source: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The source's first frame (it stays the stream's first), else a black one."""
    frame = source.peek() if hasattr(source, "peek") else None
    return frame if frame is not None else np.zeros(shape, np.uint8)


def _pipeline_options(args: argparse.Namespace, shapes: Sequence[tuple[int, ...]],
                      per_stream: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    from aip.pipeline.tracking import tracker_config

    # BoT-SORT's motion compensation reads the pixels: a stream's tracker may need the frames kept.
    frames_for_tracks = any(options.get("track") and tracker_config(options["track"]).reads_frames
                            for options in per_stream)
    largest = (max(shape[0] for shape in shapes), max(shape[1] for shape in shapes), 3)
    return {"mode": args.mode, "target_fps": args.fps, "on_full": args.on_full,
            "max_age_ms": args.max_age_ms, "latency_budget_ms": args.latency_budget_ms,
            "max_frame_shape": largest, "stream_timeout_s": args.stream_timeout,
            "max_reconnects": None if args.reconnect_forever else args.max_reconnects,
            "restart_workers": args.restart_workers, "conf": args.conf, "iou": args.iou,
            "keep_frames": bool(args.video or args.serve or frames_for_tracks),  # --serve: the tiles
            "track": args.track, "class_names": _class_names(args)}


def _class_names(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The model's class names, for results and events: a trained ``.pt``
    has them (a seeded ``.yaml`` only numbers its classes)."""
    if not args.model or not str(args.model).lower().endswith(".pt"):
        return None
    from aip.vision.models import resolve_model

    return resolve_model(args.model).class_names


def _calibrate_run(args: argparse.Namespace, pipeline: Pipeline, frame: np.ndarray) -> None:
    """Say which workers run; weigh them (cached, or measured now) unless one
    alone runs or ``--mode pull`` needs no weights."""
    _say(args, "workers: " + ", ".join(f"{label} ({spec.options})" for label, spec in
                                      zip(pipeline.labels, pipeline.specs)))
    if args.mode == "pull" or len(pipeline.specs) < 2:
        return
    calibration = pipeline.calibrate(frame, refresh=args.recalibrate)
    how = ("cached, a probe confirmed it" if calibration.source == "cache"
           else "measured now" + (", not cached" if calibration.problems else ""))
    _say(args, f"weights {dict(zip(pipeline.labels, pipeline.weights))}, calibrated "
         f"together {calibration.ideal_fps:.1f} FPS ({how})")


def _open_sinks(args: argparse.Namespace, first: Any, shape: tuple[int, ...]) -> list[Any]:
    from aip.io.sinks import AnnotatedVideoSink, JsonLinesSink

    sinks: list[Any] = []
    if args.jsonl:
        sinks.append(JsonLinesSink(args.jsonl))
    if args.video:
        sinks.append(AnnotatedVideoSink(args.video, fps=first.fps or 30.0, size=(shape[1], shape[0])))
    if args.mqtt or args.webhook:
        from aip.io.remote_sinks import open_remote_sinks

        sinks += open_remote_sinks(args.mqtt, args.webhook,
                                   token=args.webhook_token or os.environ.get("AIP_WEBHOOK_TOKEN"),
                                   qos=args.mqtt_qos, retain=args.mqtt_retain,
                                   detections=args.publish_detections)
    return sinks


def _web_server(args: argparse.Namespace, names: Sequence[str]) -> Any:
    """``--serve``: the page and the REST API, listening now (a busy port, or
    a bind beyond loopback without a token, fails before any worker starts)."""
    from aip.app.web import LiveView, WebServer

    host, port = args.serve
    web = WebServer(host, port, args.token or os.environ.get("AIP_TOKEN") or None, LiveView(),
                    streams=names).start()
    _say(args, f"web: {web.url}/" + ("  (open it with ?token=TOKEN)" if web.token else ""))
    return web


def _deliver(args: argparse.Namespace, pipeline: Pipeline, sinks: Sequence[Any]) -> int:
    """The run, its results into ``sinks``, with the live display; the
    signal that drained it (0: none). Prints the report at the end."""
    from aip.app.observe import ProgressDisplay

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
        for sink in sinks:
            if hasattr(sink, "stats"):  # a remote sink: what reached the far end
                stats = sink.stats()
                print(f"{sink.name} {sink.target}: {stats['delivered']} delivered, {stats['dropped']} "
                      f"dropped, {stats['retries']} retries"
                      + (f" (last error: {stats['last_error']})" if stats["last_error"] else ""))
    return signals.received


def _write_metrics(args: argparse.Namespace, metrics: Any) -> None:
    """``--metrics-json`` and ``--plot``, of a local or a cluster run."""
    if args.metrics_json:
        with open(args.metrics_json, "w", encoding="utf-8") as out:
            out.write(metrics.to_json() + "\n")
    if args.plot:
        metrics.plot(args.plot)


# ---- which flags a run takes ---------------------------------------------------------------

# Flags of `aip run` that a --cluster run cannot honour, each with why and
# what to do instead.
CLUSTER_REFUSES: dict[str, str] = {
    "video": "the frames stay on the nodes; --jsonl writes the detections",
    "realtime": "the nodes pace every stream alike: --fps N, in streams mode",
    "priority": "the nodes take no per-stream options",
    "drain_timeout": "a cluster run does not drain: Ctrl-C stops it",
    "metrics_port": "/metrics and /healthz watch a local pipeline; --metrics-json writes the "
                    "cluster's figures at the end",
    "metrics_host": "it goes with --metrics-port",
    "serve": "the page and its API watch a local pipeline",
    "track": "tracks follow one stream's frames in order on this machine; run the stream here",
    "mqtt": "events come from tracks, which a cluster run does not make",
    "webhook": "events come from tracks, which a cluster run does not make",
    "token": "it goes with --serve",
}
# Flags a --cluster run honours in streams mode only: they act where a node
# reads its streams. In frames mode this machine reads the sources, as fast
# as the nodes take the frames.
CLUSTER_STREAMS_MODE_ONLY = ("fps", "on_full", "max_age_ms", "latency_budget_ms", "stream_timeout",
                             "max_reconnects", "reconnect_forever")
# Flags that mean something only with --cluster.
CLUSTER_ONLY = ("cluster_mode", "cluster_encoding")


def given_flags(args: argparse.Namespace) -> set[str]:
    """The ``aip run`` flags (their destinations) the user set: on the command
    line, even to their default value (``main`` records them), or in the
    config file; and any that differs from its default (``args`` built in
    code). A switch set to false is not given."""
    from aip.app.config import command_parser

    defaults = {action.dest: action.default for action in command_parser(build_parser(), "run")._actions}
    changed = {dest for dest, default in defaults.items() if getattr(args, dest, default) != default}
    named = set(getattr(args, "given_flags", ())) | set(getattr(args, "config_flags", ()))
    return {dest for dest in changed | named if dest in defaults and getattr(args, dest, None) is not False}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_cluster_flags(args: argparse.Namespace, given: set[str],
                        per_stream: Sequence[Mapping[str, Any]]) -> None:
    """A :class:`UsageError` naming every flag ``given`` that a ``--cluster``
    run would not honour, and why: before anything connects or starts."""
    refused = [f"{_flag(dest)} ({why})" for dest, why in CLUSTER_REFUSES.items() if dest in given]
    if any(per_stream):
        refused.append("per-stream options ([[streams]] keys, --streams line options: the nodes "
                       "take one set for every stream)")
    streams_only = [_flag(dest) for dest in CLUSTER_STREAMS_MODE_ONLY if dest in given]
    if streams_only and args.cluster_mode == "frames":
        refused.append(f"{', '.join(streams_only)} in --cluster-mode frames (this machine reads the "
                       "sources there, as fast as the nodes take frames: use --cluster-mode streams)")
    if "cluster_encoding" in given and args.cluster_mode == "streams":
        refused.append("--cluster-encoding in --cluster-mode streams (no frame travels: the nodes "
                       "read the sources)")
    if refused:
        raise UsageError("--cluster does not take " + "; ".join(refused))


def check_local_flags(args: argparse.Namespace, given: set[str], specs: Sequence[str]) -> None:
    """A :class:`UsageError` for flags a run on this machine cannot take."""
    cluster_only = [_flag(dest) for dest in CLUSTER_ONLY if dest in given]
    if cluster_only:
        raise UsageError(f"{' and '.join(cluster_only)} go with --cluster ADDRESS (a run on a "
                         "Dask cluster's nodes); drop them to run here")
    if args.video and len(specs) > 1:
        raise UsageError("--video writes one annotated video: give it one source")
    _check_tracking_flags(args)
    if args.token and not args.serve:
        raise UsageError("--token goes with --serve [HOST:]PORT (the page and API it guards)")


def _check_tracking_flags(args: argparse.Namespace) -> None:
    """A tracker config that cannot load or a sink URL of the wrong form: an
    error now, before any worker starts."""
    from aip.io.remote_sinks import check_urls

    checks = [("--track", args.track, _load_tracker),
              ("--mqtt", args.mqtt, lambda url: check_urls(url, None)),
              ("--webhook", args.webhook, lambda url: check_urls(None, url))]
    for flag, value, check in checks:
        if value:
            try:
                check(value)
            except (ValueError, FileNotFoundError, ImportError) as error:
                raise UsageError(f"{flag} {redact(value)}: {error}") from None


def _load_tracker(spec: str) -> None:
    from aip.pipeline.tracking import tracker_config

    tracker_config(spec)


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

    if not args.backend:
        raise UsageError("--cluster needs the backends of each node: -b SPEC (repeat for more), "
                         "e.g. -b onnx:threads=1 -b onnx:threads=1")
    largest = _cluster_frame_shape(specs)
    backends = named_backends(args, _model_options(args, (largest[0], largest[1])))
    pipeline_options, stream_options = cluster_options(args)
    sink = JsonLinesSink(args.jsonl) if args.jsonl else None
    with Cluster(args.cluster, backends, max_frame_shape=largest, encoding=args.cluster_encoding,
                 pipeline_options=pipeline_options) as cluster:
        _say(args, "nodes: " + ", ".join(f"{name} ({fps:.1f} FPS)" for name, fps in
                                         cluster.calibration.items()))
        try:
            for result in cluster.run(specs, mode=args.cluster_mode, max_frames=args.frames,
                                      stream_options=stream_options):
                if sink is not None:
                    sink.write(result)
        finally:
            if sink is not None:
                sink.close()
            print(cluster.metrics.format_table())
    _write_metrics(args, cluster.metrics)
    return 0


def _cluster_frame_shape(specs: Sequence[str]) -> tuple[int, int, int]:
    """The nodes' slot size: the largest source; a source only the nodes can
    open counts as 1080p."""
    from aip.io.sources import open_source

    shapes = []
    for spec in specs:
        try:
            with open_source(spec) as source:
                shapes.append(tuple(source.shape))
        except (OSError, ValueError, RuntimeError):
            shapes.append((1080, 1920, 3))
    return (max(shape[0] for shape in shapes), max(shape[1] for shape in shapes), 3)


def cluster_options(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The nodes' ``Pipeline`` options and (streams mode) every stream's
    ``add_stream`` options, from the flags (see :func:`check_cluster_flags`)."""
    pipeline_options: dict[str, Any] = {"mode": args.mode, "conf": args.conf, "iou": args.iou,
                                        "restart_workers": args.restart_workers}
    if args.cluster_mode != "streams":
        return pipeline_options, {}
    pipeline_options["stream_timeout_s"] = args.stream_timeout
    pipeline_options["max_reconnects"] = None if args.reconnect_forever else args.max_reconnects
    stream_options = {key: value for key, value in (
        ("fps", args.fps), ("policy", args.on_full), ("max_age_ms", args.max_age_ms),
        ("latency_budget_ms", args.latency_budget_ms)) if value is not None}
    return pipeline_options, stream_options


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
    _add_run_command(commands)
    backends = commands.add_parser("backends", help="which backends run here, and why not")
    backends.set_defaults(handler=cmd_backends)
    doctor = commands.add_parser("doctor", help="what this machine can run; stale shared memory")
    doctor.add_argument("--clean", action="store_true",
                        help="remove aip segments whose creator process is gone")
    doctor.set_defaults(handler=cmd_doctor)
    _add_calibrate_command(commands)
    _add_export_command(commands)
    bench = commands.add_parser("bench", help="python -m aip.bench", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=lambda args: _bench(args.rest))
    return parser


def _add_backend_options(sub: argparse._ActionsContainer) -> None:
    sub.add_argument("--backend", "-b", action="append", metavar="SPEC",
                     help="a worker (repeat for more); default: every real backend available")
    sub.add_argument("--model", help="yolo11n.pt, an exported model (run at the input size it was "
                     "exported for), or a .yaml (default: yolo11n.yaml, seeded random weights)")
    sub.add_argument("--imgsz", type=_imgsz, help="network input, e.g. 640 or 480x640")


def _add_run_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser("run", help="detect objects in one or many sources")
    run.add_argument("sources", nargs="*", metavar="SOURCE",
                     help="video file, image folder, camera index, rtsp:// or http(s):// URL, "
                     "synthetic[:WxH], or sample[:FRAMES]; several run as streams side by side "
                     "(default: a 120-frame video made from ultralytics' bundled photos)")
    run.add_argument("--streams", metavar="FILE", help="more sources, one per line")
    run.add_argument("--config", metavar="FILE",
                     help="read these flags from a TOML file (see docs/usage.md, \"Config files\"); "
                     "flags given here win")
    _add_backend_options(run.add_argument_group("backends and model"))
    _add_run_scheduling(run.add_argument_group("scheduling and flow control"))
    _add_run_streams(run.add_argument_group("streams and detection"))
    _add_run_output(run.add_argument_group("output and monitoring"))
    _add_run_tracking(run.add_argument_group("tracks, zones and events (docs/tracking.md)"))
    cluster = run.add_argument_group("scale-out (docs/cluster.md)")
    cluster.add_argument("--cluster", metavar="ADDRESS",
                         help="run on the nodes of a Dask cluster, e.g. tcp://HOST:8786 (needs "
                         "aip[cluster]; -b gives each node's backends; see docs/cluster.md)")
    cluster.add_argument("--cluster-mode", choices=("streams", "frames"), default="streams",
                         help="streams: whole streams per node, which open the sources themselves "
                         "(default); frames: this machine reads and spreads the frames")
    cluster.add_argument("--cluster-encoding", choices=("raw", "jpeg"), default="raw",
                         help="how frames travel in frames mode (default raw)")
    run.set_defaults(handler=cmd_run)


def _add_run_tracking(group: argparse._ActionsContainer) -> None:
    group.add_argument("--track", metavar="YAML",
                       help="track objects per stream with ultralytics' tracker of this config: "
                       "bytetrack.yaml, botsort.yaml or your own file (per stream: track = ... "
                       "in a [[streams]] table, which also takes zones and lines)")
    group.add_argument("--mqtt", metavar="URL",
                       help="publish events (and with --publish-detections, each frame's "
                       "detections) to an MQTT broker: mqtt://[user:pass@]host[:port], topics "
                       "aip/<stream>/events and aip/<stream>/detections")
    group.add_argument("--mqtt-qos", type=int, choices=(0, 1, 2), default=0, help="MQTT QoS (default 0)")
    group.add_argument("--mqtt-retain", action="store_true", help="publish MQTT messages retained")
    group.add_argument("--webhook", metavar="URL",
                       help="POST each frame's events as JSON to this http(s) URL")
    group.add_argument("--webhook-token", metavar="TOKEN",
                       help="sent as Authorization: Bearer TOKEN (default: $AIP_WEBHOOK_TOKEN)")
    group.add_argument("--publish-detections", action="store_true",
                       help="--mqtt and --webhook send every frame's detections too, not only events")


def _add_run_scheduling(group: argparse._ActionsContainer) -> None:
    group.add_argument("--mode", choices=("static", "adaptive", "pull"), default="adaptive",
                       help="static: the calibrated weighted cycle; adaptive (default): that "
                       "cycle, re-weighted from measured service times (a slowed or restarted "
                       "worker is measured again); pull: any idle worker takes the next frame")
    group.add_argument("--fps", type=positive_float, help="pace input to this many frames per second")
    group.add_argument("--realtime", action="store_true", help="pace each stream to its source's own rate")
    group.add_argument("--on-full", choices=POLICIES, default=None,
                       help="when the workers are busy: every stream's policy (default by source: "
                       "latest for a camera or stream, only its freshest frame waits; block for a "
                       "file or folder, lose nothing)")
    group.add_argument("--priority", action="append", metavar="STREAM=W",
                       help="a stream's share of the workers under overload against the others' "
                       "(default 1; STREAM is its name, its source or its position from 0); repeat")
    group.add_argument("--latency-budget-ms", type=positive_float, metavar="MS",
                       help="capture -> result: a frame goes only to a worker predicted to finish "
                       "it in time; one that none can is skipped (late) before inference")
    group.add_argument("--max-age-ms", type=positive_float, metavar="MS",
                       help="skip (count as late) a frame older than this when a worker would take it")
    group.add_argument("--restart-workers", action="store_true",
                       help="restart a worker that dies, with back-off (at most 3 times a minute)")
    group.add_argument("--drain-timeout", type=positive_float, default=10.0, metavar="S",
                       help="on SIGTERM or Ctrl-C, wait this long for the frames in flight (default 10)")


def _add_run_streams(group: argparse._ActionsContainer) -> None:
    group.add_argument("--stream-timeout", type=positive_float, default=10.0, metavar="S",
                       help="a stream that gives no frame for this long is reconnected (default 10)")
    group.add_argument("--max-reconnects", type=nonnegative_int, default=3, metavar="N",
                       help="tries after a camera or stream fails, at the first open and every "
                       "reopen, with back-off (0.5 s doubling to 30 s), before it is evicted "
                       "(default 3)")
    group.add_argument("--reconnect-forever", action="store_true",
                       help="never evict a camera: keep reconnecting with back-off")
    group.add_argument("--frames", type=positive_int, help="stop each stream after this many frames")
    group.add_argument("--conf", type=fraction, default=0.25, help="confidence threshold, 0-1")
    group.add_argument("--iou", type=fraction, default=0.7, help="NMS IoU threshold, 0-1")
    group.add_argument("--recalibrate", action="store_true", help="measure again, ignore the cache")


def _add_run_output(group: argparse._ActionsContainer) -> None:
    group.add_argument("--jsonl", metavar="PATH", help="write one JSON line per frame")
    group.add_argument("--video", metavar="PATH", help="write an annotated video")
    group.add_argument("--metrics-json", metavar="PATH", help="write the run's metrics as JSON")
    group.add_argument("--plot", metavar="PATH", help="save latency and FPS plots (PNG, needs matplotlib)")
    group.add_argument("--quiet", "-q", action="store_true",
                       help="no progress display and no start-up lines (warnings, errors and the "
                       "final report still print); the display is a live table on a terminal, "
                       "else one line every 5 s on stderr")
    group.add_argument("--metrics-port", type=int, default=0, metavar="N",
                       help="serve Prometheus metrics on http://HOST:N/metrics and health on "
                       "/healthz (200 ready or backpressure; 503 starved, stalled or idle); "
                       "default 0: off")
    group.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                       help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 for every interface)")
    group.add_argument("--serve", type=_serve_address, metavar="[HOST:]PORT",
                       help="serve a live page (annotated tiles, per-stream figures, backends, "
                       "events) and a REST API to add and remove streams, for the length of the "
                       "run (docs/web.md); host 127.0.0.1 unless given; port 0: any free one")
    group.add_argument("--token", metavar="TOKEN",
                       help="what every request to --serve must carry (Authorization: Bearer TOKEN "
                       "or ?token=TOKEN); needed to bind beyond 127.0.0.1 (default: $AIP_TOKEN)")


def _serve_address(text: str) -> tuple[str, int]:
    from aip.app.web import serve_address

    return serve_address(text)


def _add_calibrate_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    calibrate = commands.add_parser("calibrate", help="measure the backends, store weights")
    calibrate.add_argument("source", nargs="?", default="sample",
                           help="where the representative frame comes from (as for run)")
    _add_backend_options(calibrate)
    calibrate.add_argument("--seconds", type=float, default=3.0, help="per measurement phase")
    calibrate.add_argument("--show", action="store_true",
                           help="print what is cached and when it was measured; measure nothing")
    calibrate.set_defaults(handler=cmd_calibrate)


def _add_export_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser("export", help="export a model for runtimes (cached)")
    export.add_argument("model", nargs="?", help="a .pt or .yaml (default: seeded yolo11n.yaml)")
    export.add_argument("--format", "-f", action="append", choices=("onnx", "coreml", "torchscript"),
                        required=True, help="repeat for several")
    export.add_argument("--imgsz", type=_imgsz, help="network input, e.g. 640 or 480x640 (default "
                        "640); `aip run --model` runs the file at the size it was exported for")
    export.add_argument("--half", action="store_true", help="float16 weights")
    export.set_defaults(handler=cmd_export)


def _bench(rest: Sequence[str]) -> int:
    from aip.bench.__main__ import main as bench_main

    return bench_main(list(rest))


def main(argv: Sequence[str] | None = None) -> int:
    """``aip ...``: the exit code says how it ended (see :mod:`aip.errors`)."""
    logging.basicConfig(level=logging.WARNING, format="aip: %(message)s")
    install_log_redaction()  # what aip logs names sources: never with their passwords
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        if args.command == "run":  # which flags were given, for checks that a default cannot fool
            from aip.app.config import given_on_command_line

            args.given_flags = given_on_command_line(build_parser, argv)
        if getattr(args, "config", None):
            from aip.app.config import apply

            args = apply(args, argv, build_parser)
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("aip: interrupted", file=sys.stderr)
        return exit_code(KeyboardInterrupt())
    except _Terminated:
        print("aip: SIGTERM before the run started: stopped, nothing left running", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as error:  # every error ends as one line and its documented code
        # Redacted: a source's error quotes its URL, password and all.
        print(f"aip: error: {redact(_describe(error))}", file=sys.stderr)
        if os.environ.get("AIP_TRACEBACK"):
            import traceback

            # a worker's own traceback is in the message, printed here too
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
        return exit_code(error)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(BaseException):
    """SIGTERM while a command starts (workers loading, calibration): unwinds
    like Ctrl-C, so that what was started is stopped and its shared memory
    removed. Once frames flow, the run drains instead (_DrainOnSignals)."""


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


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
