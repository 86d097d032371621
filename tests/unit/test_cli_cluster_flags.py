"""``aip run --cluster``: every flag is honoured or refused, never ignored.

The refusals come before anything connects: no Dask scheduler is needed
here (the address below has none). The honoured flags' way to the nodes is
checked as the options :func:`cluster_options` builds; a run on a real Dask
cluster with them is in tests/stress/test_cluster_flags.py.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from aip.app.cli import (
    CLUSTER_REFUSES,
    CLUSTER_STREAMS_MODE_ONLY,
    build_parser,
    check_cluster_flags,
    cluster_options,
    given_flags,
    main,
)
from aip.app.config import apply, given_on_command_line
from aip.errors import EXIT_USAGE, UsageError

NOWHERE = "tcp://127.0.0.1:9"  # nothing listens: a check that let a run through would fail to connect
RUN = ["run", "synthetic:64x48", "-b", "sim:0.01", "--cluster", NOWHERE]


def parsed(*argv: str) -> argparse.Namespace:
    """``argv`` as ``main`` reads it: flags given, then the config file's."""
    args = build_parser().parse_args(list(argv))
    args.given_flags = given_on_command_line(build_parser, list(argv))
    if args.config:
        args = apply(args, list(argv), build_parser)
    return args


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("aip: error: ")
    return lines[0]


@pytest.mark.parametrize("flags, named", [
    (["--video", "out.mp4"], "--video"),
    (["--realtime"], "--realtime"),
    (["--priority", "0=2"], "--priority"),
    (["--metrics-port", "9100"], "--metrics-port"),
    (["--metrics-host", "0.0.0.0"], "--metrics-host"),
    (["--drain-timeout", "10"], "--drain-timeout"),  # its default value, given: still given
    (["--cluster-encoding", "jpeg"], "--cluster-encoding"),  # streams mode: no frame travels
    (["--cluster-mode", "frames", "--fps", "5"], "--fps"),
    (["--cluster-mode", "frames", "--on-full", "latest"], "--on-full"),
    (["--cluster-mode", "frames", "--max-age-ms", "100"], "--max-age-ms"),
    (["--cluster-mode", "frames", "--latency-budget-ms", "100"], "--latency-budget-ms"),
    (["--cluster-mode", "frames", "--stream-timeout", "5"], "--stream-timeout"),
    (["--cluster-mode", "frames", "--max-reconnects", "3"], "--max-reconnects"),
    (["--cluster-mode", "frames", "--reconnect-forever"], "--reconnect-forever"),
])
def test_a_flag_the_cluster_cannot_honour_is_a_usage_error(
        flags: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*RUN, *flags]) == EXIT_USAGE
    line = error_line(capsys)
    assert line.startswith("aip: error: --cluster does not take ")
    assert named in line and "(" in line  # with why, and what to do


def test_every_refused_flag_is_named_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*RUN, "--video", "v.mp4", "--realtime", "--metrics-port", "9100", "--plot", "p.png",
                 "--cluster-mode", "frames", "--fps", "5", "--restart-workers"]) == EXIT_USAGE
    line = error_line(capsys)
    for flag in ("--video", "--realtime", "--metrics-port", "--fps"):
        assert flag in line
    for honoured in ("--plot", "--restart-workers"):
        assert honoured not in line


def test_a_config_file_value_counts_as_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "aip.toml"
    config.write_text("metrics-port = 9100\nrealtime = true\n")
    assert main([*RUN, "--config", str(config)]) == EXIT_USAGE
    line = error_line(capsys)
    assert "--metrics-port" in line and "--realtime" in line


def test_per_stream_options_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "aip.toml"
    config.write_text('[[streams]]\nsource = "synthetic:64x48"\nname = "door"\n')
    assert main(["run", "-b", "sim:0.01", "--cluster", NOWHERE, "--config", str(config)]) == EXIT_USAGE
    assert "per-stream options" in error_line(capsys)


def test_flags_left_at_their_default_are_not_given(tmp_path: Path) -> None:
    args = parsed(*RUN)
    assert not given_flags(args) & (set(CLUSTER_REFUSES) | set(CLUSTER_STREAMS_MODE_ONLY))
    check_cluster_flags(args, given_flags(args), [{}])
    config = tmp_path / "aip.toml"
    config.write_text("realtime = false\n")  # a switch set to false in a file: not given
    args = parsed(*RUN, "--config", str(config))
    check_cluster_flags(args, given_flags(args), [{}])


def test_args_built_in_code_count_what_differs_from_the_default() -> None:
    args = build_parser().parse_args([*RUN, "--realtime"])  # no given_flags: not through main
    assert "realtime" in given_flags(args)
    with pytest.raises(UsageError, match="--realtime"):
        check_cluster_flags(args, given_flags(args), [{}])


def test_streams_mode_honours_pacing_policy_and_resilience_flags() -> None:
    args = parsed(*RUN, "--fps", "5", "--on-full", "latest", "--max-age-ms", "200",
                  "--latency-budget-ms", "300", "--stream-timeout", "4", "--max-reconnects", "1",
                  "--restart-workers", "--plot", "p.png", "--mode", "pull", "--conf", "0.5")
    check_cluster_flags(args, given_flags(args), [{}])
    pipeline_options, stream_options = cluster_options(args)
    assert pipeline_options == {"mode": "pull", "conf": 0.5, "iou": 0.7, "restart_workers": True,
                                "stream_timeout_s": 4.0, "max_reconnects": 1}
    assert stream_options == {"fps": 5.0, "policy": "latest", "max_age_ms": 200.0,
                              "latency_budget_ms": 300.0}
    forever = parsed(*RUN, "--reconnect-forever")
    assert cluster_options(forever)[0]["max_reconnects"] is None


def test_frames_mode_passes_what_the_nodes_use() -> None:
    args = parsed(*RUN, "--cluster-mode", "frames", "--cluster-encoding", "jpeg", "--restart-workers")
    check_cluster_flags(args, given_flags(args), [{}])
    assert cluster_options(args) == ({"mode": "adaptive", "conf": 0.25, "iou": 0.7,
                                      "restart_workers": True}, {})


def test_cluster_flags_without_a_cluster_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "synthetic:64x48", "-b", "sim:0.01", "--cluster-mode", "frames"]) == EXIT_USAGE
    line = error_line(capsys)
    assert "--cluster-mode" in line and "--cluster ADDRESS" in line
