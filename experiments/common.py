"""Command-line and output conventions shared by the experiment modules.

Every experiment: ``--out DIR`` (run directory: checkpoints, results.json,
permutations/, figures/), ``--seeds A B``, ``--methods``, ``--smoke``, and
``--publish DIR`` (default ``plots/<experiment>`` for full runs; smoke runs
publish nothing) where results.json, the permutations and the figures are
copied for committing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Mapping

from rebasin_jax.checkpoint import atomic_write_json, list_step_checkpoints
from rebasin_jax.plotting import interpolation_panel, plot, summary_panels
from rebasin_jax.study import METHODS, validate_results

REPO = Path(__file__).resolve().parents[1]

METHOD_TITLES = {"weight": "Weight matching", "activation": "Activation matching", "ste": "STE matching"}


def apply_logits(model, params, x):
    """``model``'s outputs for ``params`` (use with ``functools.partial(apply_logits, model)``)."""
    return model.apply({"params": params}, x)


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description)
    parser.add_argument("--out", type=Path, default=Path("runs") / name,
                        help="run directory; existing checkpoints there are reused (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs=2, default=[0, 1], metavar=("A", "B"),
                        help="seeds of models A and B (default: 0 1)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="matching methods (default: all three)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, finishes in seconds (for tests)")
    parser.add_argument("--publish", type=Path, default=None,
                        help=f"copy results.json, permutations and figures here (default: plots/{name}; "
                             f"smoke runs publish nothing)")
    parser.add_argument("--no-publish", action="store_true", help="do not copy results anywhere")
    parser.add_argument("--lambdas", type=int, default=25, help="interpolation points (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    return parser


def check_args(parser: argparse.ArgumentParser, args) -> None:
    if args.seeds[0] == args.seeds[1]:
        parser.error(f"--seeds: models A and B need different seeds, got {args.seeds[0]} twice")
    if args.lambdas < 3:
        parser.error(f"--lambdas must be at least 3 (got {args.lambdas})")


def publish_dir(args, name: str) -> Path | None:
    if args.no_publish:
        return None
    if args.publish is not None:
        return args.publish
    return None if args.smoke else REPO / "plots" / name


class Log:
    """Timestamped progress lines on stderr (silent with --quiet)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.start = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.start:7.1f}s] {msg}", file=sys.stderr, flush=True)


def start_run(out: Path) -> None:
    """Creates the run directory and removes outputs of a previous run, so a run
    that fails midway never leaves results that look valid."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").unlink(missing_ok=True)
    for sub in ("figures", "permutations"):
        shutil.rmtree(out / sub, ignore_errors=True)


def pair_results(name: str, out: Path, seeds, curves: Mapping, config: Mapping, lambdas) -> dict:
    """The results.json dict of a two-model study (see ``rebasin_jax.study.validate_results``).

    Models A and B are described by their last checkpoint under ``out/checkpoints``
    and their metrics at the ends (lambda 0 and 1) of the naive curve.
    """
    naive = curves["naive"]
    models = {}
    for label, idx, seed in (("a", 0, seeds[0]), ("b", -1, seeds[1])):
        step, ckpt = list_step_checkpoints(out / "checkpoints", seed)[-1]
        models[label] = {"seed": seed, "step": step, "checkpoint": str(ckpt.relative_to(out)),
                         **{k: naive[k][idx] for k in ("train_loss", "test_loss", "train_acc", "test_acc")}}
    return {"experiment": name, "config": dict(config), "models": models, "lambdas": list(lambdas),
            "curves": dict(curves)}


def interpolation_figures(results: Mapping, fig_dir: Path) -> list[Path]:
    """One loss and one accuracy figure per method/variant, plus the summary."""
    curves, lambdas = results["curves"], results["lambdas"]
    paths = []
    for key in curves:
        if key == "naive":
            continue
        method, variant = key.split("/")
        title = f"{METHOD_TITLES.get(method, method)} ({variant})"
        for metric, word in (("loss", "loss"), ("acc", "accuracy")):
            panel = interpolation_panel(curves, lambdas, key, metric, title)
            paths.append(plot(fig_dir / f"interp_{word}_{method}_{variant}.png", [panel]))
    paths.append(plot(fig_dir / "summary.png", summary_panels(curves, lambdas),
                      title=f"{results['experiment']}: naive vs permuted interpolation (test set)"))
    return paths


def finish(results: dict, out: Path, publish: Path | None, log: Log) -> None:
    """Validates and writes results.json (last, atomically) and publishes the run."""
    validate_results(results)
    atomic_write_json(out / "results.json", results)
    if publish is not None:
        publish_files(out, publish, log)


def publish_files(out: Path, publish: Path, log: Log) -> None:
    """Replaces ``publish``'s results.json, permutations/ and PNGs with this run's."""
    publish.mkdir(parents=True, exist_ok=True)
    for old in list(publish.glob("*.png")) + [publish / "results.json"]:
        old.unlink(missing_ok=True)
    shutil.rmtree(publish / "permutations", ignore_errors=True)
    if (out / "permutations").is_dir():
        shutil.copytree(out / "permutations", publish / "permutations")
    for png in (out / "figures").glob("*.png"):
        shutil.copy2(png, publish / png.name)
    shutil.copy2(out / "results.json", publish / "results.json")
    log(f"published to {publish}")


def barrier_table(results: Mapping) -> str:
    """Plain-text table of test-loss and test-accuracy barriers (for the summary)."""
    rows = [f"{'curve':<24} {'test loss barrier':>18} {'test acc barrier':>17} {'seconds':>8}"]
    for name, curve in results["curves"].items():
        sec = f"{curve['seconds']:.1f}" if "seconds" in curve else "-"
        rows.append(f"{name:<24} {curve['barrier']['test_loss']:>18.4f} {curve['barrier']['test_acc']:>17.4f} {sec:>8}")
    return "\n".join(rows)
