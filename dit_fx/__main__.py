"""Command line: ``python -m dit_fx demo [--steps N --threshold T --dump-dir D]``."""

from __future__ import annotations

import sys


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m dit_fx demo [--steps N] [--threshold T] [--dump-dir DIR]")
        return
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from .demo import main as demo_main

        demo_main(rest)
    else:
        raise SystemExit(f"unknown command {command!r}; available: demo")


if __name__ == "__main__":
    main()
