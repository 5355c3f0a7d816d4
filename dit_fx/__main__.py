"""Command line: ``python -m dit_fx demo|matrix|metrics ...`` (``python -m dit_fx`` prints the usage).

- ``demo``: the shipped trained Fashion-MNIST model (random weights without it), 28 steps plain vs
  dit_fx; writes ``dit_fx_demo.png`` and a dump (``dit_fx.tools.demo``).
- ``matrix``: the supported diffusers transformers as a markdown table (``dit_fx.tools.matrix``).
- ``metrics A B``: PSNR / SSIM / MSE of two image folders or files (``dit_fx.metrics``).
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m dit_fx COMMAND [OPTIONS]

commands:
  demo      plain vs dit_fx, 28 steps, on the shipped trained Fashion-MNIST model (random weights
            when it is not installed); prints plan, cached steps, times and PSNR/SSIM, writes
            dit_fx_demo.png (plain | dit_fx | difference) and the dump folder dit_fx_dump/
            [--model auto|trained|random] [--steps N] [--threshold T] [--rounds R] [--classes 0,1,7,8]
            [--png PATH] [--dump-dir DIR] [--assets DIR]
  matrix    the supported diffusers transformer families, as a markdown table (docs/models.md)
  metrics   PSNR / SSIM / MSE of A against B (image folders or files, .pt, .npy); LPIPS / FID / CLIP on your weights
            A B [--data-range L] [--json PATH|-] [--per-item]

python -m dit_fx demo --help, python -m dit_fx metrics --help: every option of those commands."""


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
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
        except (ValueError, FileNotFoundError, ImportError) as exc:  # bad input, missing weights, missing library
            raise SystemExit(f"dit_fx metrics: {exc}") from exc
    else:
        raise SystemExit(f"unknown command {command!r}; available: demo, matrix, metrics (python -m dit_fx --help)")


if __name__ == "__main__":
    main()
