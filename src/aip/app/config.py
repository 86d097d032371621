"""``aip run --config aip.toml``: every flag of ``aip run`` in a TOML file.

A key is a flag's long name, with ``-`` or ``_``: ``on-full = "latest"``
for ``--on-full latest``, ``backends = ["onnx:threads=1", "cpu"]`` (or
``backend``) for ``-b onnx:threads=1 -b cpu``, ``sources = [...]`` for the
positional sources. A flag on the command line wins over the file. Streams
may also come as tables, with options of their own::

    [[streams]]
    source = "rtsp://camera-1/stream"
    name = "door"
    fps = 10
    policy = "latest"        # block, drop-oldest, drop-newest, latest (default: by source)
    max_age_ms = 200
    frames = 1000
    priority = 2             # twice the share of a priority-1 stream under overload
    latency_budget_ms = 100  # capture -> result; a frame no worker can make it in: late
    track = "bytetrack.yaml" # tracks per stream (zones and lines imply it)
    zones = [{ name = "lobby", points = [[0, 0], [320, 0], [320, 480], [0, 480]], classes = ["person"] }]
    lines = [{ name = "door", start = [400, 0], end = [400, 480] }]

and backends as tables: ``[[backends]]`` with ``name = "onnx"`` and the
backend's options (``threads = 1``).

Every value goes through the flag's own parser (type, choices, range), so
the file accepts exactly what the command line does; an unknown key or a
bad value is a :class:`~aip.errors.ConfigError` that names the file, the
key and what is allowed.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aip.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Keys that name another flag (plural forms read better in a file).
ALIASES = {"backends": "backend", "source": "sources"}
# Flags that make no sense inside the file.
NOT_IN_FILE = frozenset({"config", "help"})
# Options of one stream table -> Pipeline.add_stream's keyword.
STREAM_KEYS = {"source": "source", "name": "name", "fps": "fps", "policy": "policy",
               "max_age_ms": "max_age_ms", "frames": "max_frames", "priority": "priority",
               "latency_budget_ms": "latency_budget_ms", "track": "track", "zones": "zones",
               "lines": "lines"}


# ---- value types shared by the flags and the file ------------------------------------------

def positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port 0-65535 (0: any free one), got {text!r}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


# ---- the file ----------------------------------------------------------------------------

def load(path: str | Path) -> dict[str, Any]:
    """The TOML file at ``path`` as a dict; ConfigError if it cannot be read."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The subcommand parser ``command`` of ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub: argparse.ArgumentParser = action.choices[command]
            return sub
    raise KeyError(command)


def file_keys(actions: dict[str, argparse.Action]) -> list[str]:
    """Every key a config file may hold, as docs/usage.md lists them."""
    keys = {dest.replace("_", "-") for dest in actions if dest not in NOT_IN_FILE}
    return sorted(keys | {"backends", "streams (tables)"})


_UNSET = object()


def given_on_command_line(build_parser: Callable[[], argparse.ArgumentParser],
                          argv: Sequence[str], command: str = "run") -> set[str]:
    """The destinations of the flags that ``argv`` sets: parsed again by a
    fresh parser whose defaults are all a marker, so that a flag given with
    its default value still counts as given."""
    parser = build_parser()
    for action in command_parser(parser, command)._actions:
        if not isinstance(action, argparse._AppendAction):  # append copies its default: keep None
            action.default = _UNSET
    parsed = parser.parse_args(list(argv))
    return {dest for dest, value in vars(parsed).items() if value is not _UNSET and value is not None
            and value != []}


def apply(args: argparse.Namespace, argv: Sequence[str],
          build_parser: Callable[[], argparse.ArgumentParser], command: str = "run") -> argparse.Namespace:
    """Fill ``args`` from the file ``args.config`` where ``argv`` set no flag.

    Sets ``args.stream_options``: one dict of ``add_stream`` options per
    source, in the order of ``args.sources``, when the sources came from the
    file's ``[[streams]]`` tables (else empty); and ``args.config_flags``:
    the destinations the file set (a flag given there counts as given).
    """
    path = str(args.config)
    values = load(path)
    actions = {action.dest: action for action in command_parser(build_parser(), command)._actions}
    given = given_on_command_line(build_parser, argv, command)
    args.stream_options = []
    args.config_flags = set()
    file_sources: list[str] = []
    tables: tuple[list[str], list[dict[str, Any]]] = ([], [])
    for key, value in values.items():
        dest = key.replace("-", "_")
        dest = ALIASES.get(dest, dest)
        if dest == "streams" and isinstance(value, list):
            tables = stream_tables(path, value)
            continue
        action = actions.get(dest)
        if action is None or dest in NOT_IN_FILE:
            raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(file_keys(actions))}")
        converted = _convert(path, key, action, value)
        if dest == "sources":
            file_sources = converted
        elif dest not in given:
            setattr(args, dest, converted)
            args.config_flags.add(dest)
    if (file_sources or tables[0]) and "sources" not in given:
        args.sources = file_sources + tables[0]
        args.config_flags.add("sources")
        if tables[0]:  # options line up with args.sources
            args.stream_options = [{} for _ in file_sources] + tables[1]
    return args


def _convert(path: str, key: str, action: argparse.Action, value: Any) -> Any:
    def bad(message: str) -> ConfigError:
        return ConfigError(f"{path}: {key} = {value!r}: {message}")

    if action.nargs == 0:  # store_true
        if not isinstance(value, bool):
            raise bad("must be true or false")
        return value
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
        items = value if isinstance(value, list) else [value]
        if action.dest == "backend":
            items = [_backend_text(bad, item) for item in items]
        return [_scalar(bad, action, item) for item in items]
    return _scalar(bad, action, value)


def _scalar(bad: Callable[[str], ConfigError], action: argparse.Action, value: Any) -> Any:
    if isinstance(value, list) and action.dest == "imgsz" and len(value) == 2:
        value = f"{value[0]}x{value[1]}"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad("must be " + ("a number" if action.type in _NUMBERS else "a string"))
    if action.type is not None:
        try:
            value = action.type(str(value))  # type: ignore[operator]
        except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
            raise bad(str(error) or "not a valid value") from None
    elif not isinstance(value, str):
        value = str(value)  # a camera index, say
    if action.choices is not None and value not in action.choices:
        raise bad(f"choose one of {', '.join(map(str, action.choices))}")
    return value


_NUMBERS: tuple[object, ...] = (float, int, positive_float, positive_int, fraction, port)


def _backend_text(bad: Callable[[str], ConfigError], item: Any) -> str:
    """``{name = "onnx", threads = 1}`` -> ``"onnx:threads=1"``."""
    if not isinstance(item, dict):
        return str(item)
    table = dict(item)
    name = table.pop("name", None)
    if not isinstance(name, str):
        raise bad("a backend table needs name = \"onnx\" (or cpu, cuda, ...)")
    options = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in table.items())
    return f"{name}:{options}" if options else name


def stream_tables(path: str, tables: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Sources and their ``add_stream`` options from ``[[streams]]`` tables
    (or the lines of a ``--streams`` file, read as tables)."""
    from aip.pipeline.streams import POLICIES

    sources: list[str] = []
    options: list[dict[str, Any]] = []
    for index, table in enumerate(tables):
        where = f"{path}: streams[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table ([[streams]] with source = \"...\")")
        unknown = set(table) - set(STREAM_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; known keys: "
                              f"{', '.join(STREAM_KEYS)}")
        if "source" not in table or isinstance(table["source"], bool) \
                or not isinstance(table["source"], (str, int)):
            raise ConfigError(f"{where}: needs source = \"a file, URL or camera index\"")
        stream: dict[str, Any] = {}
        for key, value in table.items():
            if key == "source":
                continue
            try:
                if key == "name":
                    if not isinstance(value, str) or not value:
                        raise argparse.ArgumentTypeError("must be a non-empty string")
                    converted: Any = value
                elif key == "policy":
                    if value not in POLICIES:
                        raise argparse.ArgumentTypeError(f"choose one of {', '.join(POLICIES)}")
                    converted = value
                elif key == "track":
                    if not isinstance(value, str) or not value:
                        raise argparse.ArgumentTypeError("must name a tracker config (bytetrack.yaml, ...)")
                    converted = value
                elif key in ("zones", "lines"):
                    converted = _regions(key, value)
                elif isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise argparse.ArgumentTypeError("must be a number")
                elif key == "frames":
                    converted = positive_int(str(value))
                else:
                    converted = positive_float(str(value))
            except argparse.ArgumentTypeError as error:
                raise ConfigError(f"{where}: {key} = {value!r}: {error}") from None
            stream[STREAM_KEYS[key]] = converted
        sources.append(str(table["source"]))
        options.append(stream)
    return sources, options


def _regions(key: str, value: Any) -> tuple[Any, ...]:
    """``zones = [{...}, ...]`` or ``lines = [...]`` of a stream table, read."""
    from aip.track.zones import Line, Zone

    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"must be a list of tables ([[streams.{key}]] or {key} = [{{...}}])")
    kind = Zone if key == "zones" else Line
    try:
        return tuple(kind.from_dict(table) for table in value)
    except (ValueError, TypeError, AttributeError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


__all__ = ["apply", "file_keys", "fraction", "load", "nonnegative_int", "port", "positive_float",
           "positive_int",
           "stream_tables"]
