"""Markdown tables from committed results, so README numbers come from results.json.

    python -m experiments.report plots/modular_addition/results.json [more results.json ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def barrier_rows(results: dict) -> list[str]:
    lines = [
        "| curve | test loss barrier | test acc. barrier | train loss barrier | midpoint test acc. | matching time [s] |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    mid = len(results["lambdas"]) // 2
    for name, curve in results["curves"].items():
        sec = f"{curve['seconds']:.1f}" if "seconds" in curve else "–"
        b = curve["barrier"]
        lines.append(
            f"| {name} | {b['test_loss']:.3f} | {b['test_acc']:.3f} | {b['train_loss']:.3f} | "
            f"{curve['test_acc'][mid]:.3f} | {sec} |"
        )
    return lines


def model_rows(results: dict) -> list[str]:
    lines = ["| model | seed | step | train loss | test loss | train acc. | test acc. |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, m in results["models"].items():
        lines.append(
            f"| {label.upper()} | {m['seed']} | {m.get('step', '')} | {m['train_loss']:.3g} | {m['test_loss']:.3g} | "
            f"{m['train_acc']:.4f} | {m['test_acc']:.4f} |"
        )
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files")
    args = parser.parse_args(argv)
    for path in args.results:
        results = json.loads(path.read_text())
        print(f"### {results['experiment']} ({path})\n")
        print("\n".join(model_rows(results)) + "\n")
        print("\n".join(barrier_rows(results)) + "\n")
        if "timing_seconds" in results:
            t = results["timing_seconds"]
            print("Wall time [s]: " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()) + "\n")


if __name__ == "__main__":
    main()
