#!/usr/bin/env python
"""Print the README's compiled-speed tables from the JSON files of ``bench_compiled.py``, and
with ``--plot out.png`` draw the end-to-end times (one panel per model and size).

    python benchmarks/compiled_table.py benchmarks/results/compiled_*.json --plot benchmarks/results/compiled_e2e.png

Files of one model and size are merged (rows by key); every ratio is taken inside one file, so
rows of different runs are never compared with each other.
"""

import argparse
import json
from collections import defaultdict


def fmt(v, nd=2):
    return "" if v is None else f"{v:.{nd}f}"


def load(paths):
    groups = defaultdict(list)
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        groups[(data["model"], data["size"])].append((path, data))
    return groups


def plot(groups, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 3.2 * len(groups)), squeeze=False)
    for ax, ((model, size), runs) in zip(axes[:, 0], groups.items()):
        rows = [(key, r["e2e_s"]) for _, data in runs for key, r in data["rows"].items()
                if "e2e_s" in r and not key.startswith("ideal")]
        colors = ["tab:green" if k.startswith("dit_fx") else "tab:orange" if k.startswith("cache-dit") else "tab:gray" for k, _ in rows]
        ax.barh([k for k, _ in rows], [v for _, v in rows], color=colors)
        ax.invert_yaxis()
        ax.set_xlabel("end-to-end seconds (lower is better)")
        first = runs[0][1]
        ax.set_title(f"{model} {size}px, {first['steps']} steps ({first['computed_steps']} computed), {first['env'].get('gpu', 'cpu')}")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--plot")
    a = ap.parse_args(argv)
    groups = load(a.paths)
    if a.plot:
        plot(groups, a.plot)
    for (model, size), runs in groups.items():
        first = runs[0][1]
        print(f"\n**{model} {size}px**, {first['steps']} steps, {first['computed_steps']} computed, "
              f"{first['env'].get('gpu', 'cpu')}, torch {first['env']['torch']}, cache-dit {first['env'].get('cache_dit')}\n")
        print("| system | file | cold s | step ms | computed ms | cached ms | e2e s | mask ok |")
        print("|---|---|---:|---:|---:|---:|---:|---|")
        for path, data in runs:
            for key, r in data["rows"].items():
                name = path.rsplit("/", 1)[-1].replace(".json", "")
                if "error" in r:
                    print(f"| {key} | {name} | error | | | | | |")
                    continue
                print(f"| {key} | {name} | {fmt(r.get('cold_s'), 1)} | {fmt(r.get('step_ms'))} | {fmt(r.get('computed_ms'))} | "
                      f"{fmt(r.get('cached_ms'))} | {fmt(r.get('e2e_s'), 3)} | {r.get('matches_mask', '')} |")


if __name__ == "__main__":
    main()
