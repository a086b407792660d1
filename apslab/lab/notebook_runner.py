"""Re-execute notebooks in place so their stored outputs match the code (``make notebooks``).

Each notebook runs in a fresh ``python3`` kernel with its own folder as the working directory,
exactly as nbval will re-run it, and widget state is stored so widgets render when opened.
This is developer tooling: nothing in the core imports it.

    python -m apslab.lab.notebook_runner notebooks/*.ipynb
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def execute_notebook(path: str | Path, timeout_s: int = 600, kernel_name: str = "python3"
                     ) -> float:
    """Execute ``path`` top to bottom and write it back with fresh outputs; returns seconds."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout_s, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    started = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - started
    nbformat.write(notebook, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apslab.lab.notebook_runner",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if not path.is_file():
            print(f"{path}: no such notebook", file=sys.stderr)
            return 2
        elapsed = execute_notebook(path, args.timeout)
        print(f"executed {path} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
