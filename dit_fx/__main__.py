"""Command line: ``python -m dit_fx demo [--steps N --threshold T --rounds R --dump-dir D]``, ``python -m dit_fx matrix``."""

from __future__ import annotations

import sys


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m dit_fx demo [--steps N] [--threshold T] [--rounds R] [--dump-dir DIR]\n"
              "       python -m dit_fx matrix    # supported diffusers models, as a markdown table")
        return
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from .tools.demo import main as demo_main

        demo_main(rest)
    elif command == "matrix":
        from .tools.matrix import markdown_table

        print(markdown_table())
    else:
        raise SystemExit(f"unknown command {command!r}; available: demo, matrix")


if __name__ == "__main__":
    main()
