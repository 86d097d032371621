"""The exit codes of ``aip``, and the errors that carry them.

One table, read by ``aip --help`` and the README: a script that runs aip
can tell a typo from a dead camera from a machine without the backend.

A command raises an error; :func:`exit_code` maps it to its code, and
``aip.app.cli.main`` prints its message on one line (``AIP_TRACEBACK=1`` shows
the traceback as well).
"""
from __future__ import annotations

EXIT_OK = 0  # the run finished, every frame delivered or counted
EXIT_RUNTIME = 1  # anything else that went wrong while running (a worker crashed, ...)
EXIT_USAGE = 2  # a bad flag, value, config file, model or backend name: fix the command
EXIT_SOURCE = 3  # a source could not be opened or read, or a stream was evicted
EXIT_BACKEND = 4  # a backend cannot run here (no GPU, runtime not installed, its worker cannot load)
EXIT_SIGINT = 130  # stopped by Ctrl-C (SIGINT) after draining
EXIT_SIGTERM = 143  # stopped by SIGTERM after draining

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_RUNTIME: "runtime error (a worker crashed, an internal error)",
    EXIT_USAGE: "usage error (bad flag, value, config file, model or backend name)",
    EXIT_SOURCE: "source error (cannot open or read a source; a stream was evicted)",
    EXIT_BACKEND: "backend unavailable (no such device, runtime not installed, a worker cannot load it)",
    EXIT_SIGINT: "interrupted by SIGINT (Ctrl-C), after draining",
    EXIT_SIGTERM: "terminated by SIGTERM, after draining",
}


def exit_codes_help() -> str:
    """The table, as ``aip --help`` shows it."""
    return "exit codes:\n" + "\n".join(f"  {code:3}  {meaning}" for code, meaning in EXIT_CODES.items())


class AipError(Exception):
    """An error aip reports to a person; ``exit_code`` says what kind.

    Each subsystem's errors derive from it and set their own code, so that
    mapping an error to its code needs no knowledge of the subsystems.
    """

    exit_code = EXIT_RUNTIME


class UsageError(AipError, ValueError):
    """The command asks for something that cannot be: fix the command."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config file that cannot be read, or holds an unknown key or a bad value."""


class SourceError(AipError):
    """A source that cannot be opened or read."""

    exit_code = EXIT_SOURCE


def exit_code(error: BaseException) -> int:
    """The exit code that ``error`` ends a command with.

    aip's own errors carry theirs (:attr:`AipError.exit_code`); the rest are
    the standard library's, mapped here, so this module imports nothing of
    aip's and every subsystem may import it.
    """
    if isinstance(error, AipError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return EXIT_SIGINT
    if isinstance(error, ModuleNotFoundError):
        return EXIT_BACKEND  # a runtime that is not installed
    if isinstance(error, (ConnectionError, TimeoutError)):
        return EXIT_SOURCE
    if isinstance(error, (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return EXIT_USAGE
    return EXIT_RUNTIME


__all__ = [
    "EXIT_BACKEND", "EXIT_CODES", "EXIT_OK", "EXIT_RUNTIME", "EXIT_SIGINT", "EXIT_SIGTERM",
    "EXIT_SOURCE", "EXIT_USAGE", "AipError", "ConfigError", "SourceError", "UsageError",
    "exit_code", "exit_codes_help",
]
