"""Exception types of kgmeta.

Every error a user can cause (a bad file, a bad config value, too few images) is raised as a
subclass of :class:`KGMetaError` with a one-line message that names the file or value and the
fix. The command line prints that line and exits non-zero without a traceback; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def reason(exc: BaseException, limit: int = 160) -> str:
    """A library's exception as a short reason to quote in a one-line message: its type and the
    first sentence of its first line, terminal colour codes removed, at most ``limit``
    characters. The full text stays on the exception (``raise ... from exc``) for ``--verbose``."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    text = lines[0].split(". ")[0].rstrip(".") if lines else ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class KGMetaError(Exception):
    """Base class of errors caused by user input (files, configs, arguments).

    The message is always one line: line breaks in it (a library's multi-line reason quoted in
    the message) are folded, with the spaces around them, into single spaces. The text as given
    is kept in ``detail`` (``None`` when it was one line already); ``kgmeta --verbose`` prints it
    with the library error behind it.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        text = str(message)
        lines = text.splitlines()
        line = " ".join(s.strip() for s in lines if s.strip()) if lines != [text] else text
        super().__init__(line, *args)
        self.detail: str | None = text if line != text else None


class OntologyError(KGMetaError):
    """An ontology file or class mapping cannot be read or is inconsistent."""


class DataError(KGMetaError):
    """Image data cannot be read or does not fit the requested episodes."""


class ConfigError(KGMetaError):
    """A configuration key, type or value is invalid."""


class CheckpointError(KGMetaError):
    """A checkpoint or run folder cannot be read, written or resumed."""


class TrainingError(KGMetaError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


class KGMetaWarning(UserWarning):
    """Something the user should know that is not an error (e.g. classes named only by their
    index). The command line prints it as one line ``kgmeta: warning: ...`` on stderr."""
