"""Command line: ``python -m dit_fx demo [--steps N --threshold T --rounds R --dump-dir D]``, ``python -m dit_fx matrix``,
``python -m dit_fx metrics A B [--data-range L] [--json PATH|-] [--per-item]``."""

from __future__ import annotations

import sys


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m dit_fx demo [--steps N] [--threshold T] [--rounds R] [--dump-dir DIR]\n"
              "       python -m dit_fx matrix    # supported diffusers models, as a markdown table\n"
              "       python -m dit_fx metrics A B [--data-range L] [--json PATH|-] [--per-item]   # PSNR/SSIM/MSE")
        return
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from .tools.demo import main as demo_main

        demo_main(rest)
    elif command == "matrix":
        from .tools.matrix import markdown_table

        print(markdown_table())
    elif command == "metrics":
        from .metrics import main as metrics_main

        try:
            metrics_main(rest)
        except ValueError as exc:
            raise SystemExit(f"dit_fx metrics: {exc}") from exc
    else:
        raise SystemExit(f"unknown command {command!r}; available: demo, matrix, metrics")


if __name__ == "__main__":
    main()
