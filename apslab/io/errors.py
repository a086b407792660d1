"""The one exception type for bad user input, and the mapping of file errors onto it.

Every message names where the problem is (file and line, or file and key) and what is wrong, so
the command line can print it as a single line and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class InputError(ValueError):
    """A scenario, trace or command-line value that apslab cannot accept."""


@contextmanager
def reading(path: str | Path, what: str) -> Iterator[None]:
    """Turn the ways reading ``path`` can fail into one-line InputErrors naming it.

    ``what`` names the kind of file ("trace", "scenario", ...). Errors raised inside the block
    that are not about the file itself pass through unchanged.
    """
    try:
        yield
    except FileNotFoundError:
        raise InputError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a {what} file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
