"""The one exception type for bad user input.

Every message names where the problem is (file and line, or file and key) and what is wrong, so
the command line can print it as a single line and exit with status 2 instead of a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """A scenario, trace or command-line value that apslab cannot accept."""
