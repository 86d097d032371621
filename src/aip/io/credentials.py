"""Camera credentials never leave the process.

Real camera URLs carry a user and a password (``rtsp://admin:PASSWORD@10.0.0.5/stream1``)
or a token in the query (``https://host/live.m3u8?token=...``). aip needs the
full URL to open the stream, and nothing else: whatever text leaves the
process (the console, log lines, JSON Lines, ``--metrics-json``, ``/metrics``,
``/healthz``) goes through :func:`redact` first, and streams are named by
:func:`stream_name`, which keeps only where the stream comes from.

    >>> redact("cannot open rtsp://admin:hunter2@10.0.0.5:554/stream1?token=abc&ch=1")
    'cannot open rtsp://***@10.0.0.5:554/stream1?token=***&ch=1'
    >>> stream_name("rtsp://admin:hunter2@10.0.0.5:554/stream1", taken=["10.0.0.5:554/stream1"])
    '10.0.0.5:554/stream1#2'

This module imports nothing from aip: any module may use it.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "MASK", "RedactingFilter", "install_log_redaction", "redact", "redacted_names", "stream_name",
]

MASK = "***"

# scheme://userinfo@ : any scheme (RFC 3986's characters: letters, digits,
# "+", "-", "."; the whole run of them before "://", so that a long word in
# a traceback costs one try, not one per letter). The userinfo runs to the
# LAST "@" before the authority ends (a "/", "?", "#" or white space), as
# urllib and FFmpeg read it: a password typed with a raw "@" in it
# ("admin:p@ss@host") is masked whole. Quotes and commas do not end it: a
# password may hold them, and masking too much of a message is better than
# showing part of a password.
_USERINFO = re.compile(r"(?<![A-Za-z0-9+.\-])(?P<scheme>[A-Za-z0-9+.\-]+://)[^\s/?#]*@")

# A query parameter whose name says it holds a secret: password, passwd, pwd,
# pass, token, auth, key, api_key, secret, signature, sig and a few more,
# alone or after a prefix ("access_token", "client_secret", "X-Amz-Signature",
# "auth_token"). The value runs to the next "&", "#", ";", white space,
# quote or angle bracket.
_SECRET_WORDS = (
    "password|passwd|pwd|pass|passphrase|token|auth|key|apikey|api_key|secret|signature|sig"
    "|credential|credentials|authtoken|accesstoken|session|sessionid"
)
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;](?:[A-Za-z0-9]+[_\-.])*(?:" + _SECRET_WORDS + r")=)(?P<value>[^&#\s'\"<>;]*)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL in it masked (``rtsp://***@host/...``)
    and the values of query parameters named like secrets masked
    (``?token=***``). Any text: a URL, an error message, a traceback.

    Text without credentials comes back unchanged, and ``redact(redact(t)) == redact(t)``.
    """
    if "://" not in text and "=" not in text:  # the common case, a plain name: no regex
        return text
    # Userinfo first: a password holding "&token=" must be masked whole, not
    # cut at that query-like part. Masking a query value can remove the "/"
    # or "?" that ended an authority (odd text: "x://a&key=/&@h"), which
    # makes a new userinfo: again until nothing changes, so that
    # redact(redact(t)) == redact(t). Two rounds in practice.
    for _ in range(8):
        masked = _USERINFO.sub(rf"\g<scheme>{MASK}@", text) if "@" in text else text
        masked = _SECRET_QUERY.sub(rf"\g<name>{MASK}", masked) if "=" in masked else masked
        if masked == text:
            break
        text = masked
    return text


# A URL: the scheme, then the authority (userinfo, host, port), path, query, fragment.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)")


def stream_name(spec: str | int | os.PathLike[str], taken: Iterable[str] = ()) -> str:
    """A stream's default name: where it comes from, never a credential.

    - a URL: ``host[:port]/path``, without scheme, userinfo, query or fragment
      (``rtsp://admin:pw@10.0.0.5:554/stream1?token=x`` -> ``10.0.0.5:554/stream1``);
    - a camera index (an int or a string of digits): ``camera0``;
    - a file or folder: its name (``/data/clip.mp4`` -> ``clip.mp4``, ``/data/frames/`` -> ``frames``);
    - anything else (``synthetic:640x480``, ``sample``): the spec as given.

    Made unique against ``taken`` (the names in use) by appending ``#2``, ``#3``, ...
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        base = f"camera{int(spec)}"
    else:
        text = os.fspath(spec).strip()
        match = _URL.match(text)
        if match is not None:
            host = match["authority"].rpartition("@")[2]  # the userinfo ends at the last "@"
            path = "/".join(part for part in match["path"].split("/") if part)
            base = f"{host}/{path}" if path and host else host or path or match["scheme"]
        else:
            local = Path(text)
            base = local.name or local.resolve().name or text
    base = redact(base)  # defensive: a spec that is no URL and still holds one
    used = set(taken)
    name, count = base, 1
    while name in used:
        count += 1
        name = f"{base}#{count}"
    return name


def redacted_names(names: Iterable[str]) -> list[str]:
    """``names`` redacted, in order, and still distinct: two names that differ
    only in their credentials (given by hand) become ``NAME`` and ``NAME#2``.

    For the places where names are keys (``/healthz``, ``/metrics`` labels,
    ``--metrics-json``): a merged key would hide a stream.
    """
    out: list[str] = []
    used: set[str] = set()
    for name in names:
        clean = base = redact(name)
        count = 1
        while clean in used:
            count += 1
            clean = f"{base}#{count}"
        used.add(clean)
        out.append(clean)
    return out


class RedactingFilter(logging.Filter):
    """Redacts a log record in place: its message (arguments merged in), its
    exception text and its stack text. Always lets the record through.

    Put it on handlers (:func:`install_log_redaction`): a handler's filters
    see every record the handler writes, whichever logger it came from.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: leave it to the handler to report
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None  # merged: the arguments were redacted with it
        if record.exc_info and not record.exc_text:
            # What the handler's Formatter would write (it reuses exc_text when set).
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger_name: str = "aip") -> list[logging.Handler]:
    """Add a :class:`RedactingFilter` to every handler that a record of
    ``logger_name`` (or of any logger below it, ``aip.pipeline.streams``...)
    reaches now: the handlers of that logger and of its ancestors up to the
    root, as propagation goes; Python's last-resort handler when there is none.
    Idempotent. Returns the handlers it covers.

    Why handlers: a filter on the ``aip`` logger would only see records logged
    on ``aip`` itself, not those of its children, which reach the handlers
    without passing through their parent's filters. A log-record factory
    (``logging.setLogRecordFactory``) would redact every library's records
    in the process, at the cost of a regex per record, and fight any other
    factory installed. Call it after the handlers are set up
    (``logging.basicConfig``); a handler added later is not covered.
    """
    handlers: list[logging.Handler] = []
    logger: logging.Logger | None = logging.getLogger(logger_name)
    while logger is not None:
        handlers.extend(logger.handlers)
        logger = logger.parent if logger.propagate else None
    if not handlers and logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    return handlers
