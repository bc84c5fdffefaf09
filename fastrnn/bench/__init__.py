"""``fastrnn-bench``: time fastrnn's backends against torch.nn on the same inputs, weights and dtype.

Run ``fastrnn-bench --help`` (or ``python -m fastrnn.bench --help``). This package imports
nothing heavy at import time; the command-line entry point is :func:`fastrnn.bench.cli.main`.
"""

__all__ = ["main"]


def main(argv=None):
    from .cli import main as _main

    return _main(argv)
