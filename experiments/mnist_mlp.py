"""Git Re-Basin on the paper's MNIST MLP (784-512-512-512-10).

    python -m experiments.mnist_mlp [--data-dir DIR] [--epochs 100] [--smoke]

Trains models A and B (one vmapped call, one checkpoint per epoch, reused on
reruns), validates the spec, runs weight / activation / STE matching, checks
that every permuted B computes B's function, evaluates the interpolation at 25
lambdas on the full train and test sets, and measures the barrier against the
training epoch (weight matching at each epoch's checkpoints, as in the
paper's barrier-vs-epoch figure).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from rebasin_jax.checkpoint import load_checkpoint
from rebasin_jax.data import MNIST, Split, load_mnist
from rebasin_jax.interpolate import curve_barriers, interpolation_curve
from rebasin_jax.matching.weight import weight_matching
from rebasin_jax.metrics import ClassificationMetrics, SupervisedLoss
from rebasin_jax.models import hidden_activations
from rebasin_jax.plotting import Line, Panel, history_panels, plot
from rebasin_jax.spec import apply_permutation, get_spec, validate_spec
from rebasin_jax.study import MatchingInputs, compare_methods
from rebasin_jax.train import MNISTConfig, train_mnist, unstack

NAME = "mnist_mlp"


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    ste_epochs: int = 10
    ste_lr: float = 1e-3
    ste_batch_size: int = 500
    barrier_lambdas: int = 11
    eval_batch_size: int = 10_000


def default_barrier_epochs(epochs: int) -> list[int]:
    """Every epoch up to 10, then every 5th (and the last)."""
    picked = [e for e in range(1, epochs + 1) if e <= 10 or e % 5 == 0]
    return picked if picked[-1] == epochs else picked + [epochs]


def parse_args(argv=None):
    parser = common.base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None,
                        help="directory with the four MNIST IDX files (default: $MNIST_DIR, then TFDS)")
    parser.add_argument("--epochs", type=int, default=MNISTConfig.epochs, help="training epochs (default: %(default)s)")
    parser.add_argument("--ste-epochs", type=int, default=StudyConfig.ste_epochs,
                        help="STE passes over the training set (default: %(default)s)")
    parser.add_argument("--barrier-epochs", type=int, nargs="*", default=None,
                        help="epochs for the barrier-vs-epoch figure (default: 1-10, then every 5th)")
    args = parser.parse_args(argv)
    common.check_args(parser, args)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    bad = [e for e in (args.barrier_epochs or []) if not 1 <= e <= args.epochs]
    if bad:
        parser.error(f"--barrier-epochs {bad} outside 1..{args.epochs}")
    return args


def _subset(mnist: MNIST, n_train: int, n_test: int) -> MNIST:
    return MNIST(Split(mnist.train.images[:n_train], mnist.train.labels[:n_train]),
                 Split(mnist.test.images[:n_test], mnist.test.labels[:n_test]))


def _floats(split: Split):
    x = jnp.asarray(split.images.reshape(len(split.images), -1), jnp.float32) / 255.0
    return x, jnp.asarray(split.labels)


def _ste_batches(x, y, batch_size: int, seed: int):
    """``epoch -> batches`` in a fresh random order per epoch (keys from integers)."""

    def batches(epoch: int):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(seed), epoch), x.shape[0]))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = jnp.asarray(order[i : i + batch_size])
            yield x[idx], y[idx]

    return batches


def barrier_vs_epoch(ckpt_dir, seeds, epochs, steps_per_epoch, spec, metric, x_te, y_te, n_lambdas, log) -> list[dict]:
    """Naive and weight-matched test barriers of the epoch-``e`` checkpoints of A and B."""
    lambdas = jnp.linspace(0.0, 1.0, n_lambdas)
    rows = []
    for epoch in epochs:
        step = epoch * steps_per_epoch
        pa, pb = (load_checkpoint(ckpt_dir / f"seed_{s}" / f"step_{step:08d}.ckpt").params for s in seeds)
        perm = weight_matching(jax.random.key(epoch), spec, pa, pb)
        row = {"epoch": epoch}
        for label, other in (("naive", pb), ("weight", apply_permutation(spec, perm, pb))):
            curve = interpolation_curve(metric, pa, other, lambdas, x_te, y_te)
            b = curve_barriers({"test_loss": curve["loss"], "test_acc": curve["acc"]}, np.asarray(lambdas))
            row[label] = b
        rows.append(row)
        log(f"epoch {epoch}: test loss barrier naive {row['naive']['test_loss']:.4f}, "
            f"weight matching {row['weight']['test_loss']:.4f}")
    return rows


def barrier_panels(rows) -> list[Panel]:
    epochs = [r["epoch"] for r in rows]
    panels = []
    for key, ylabel in (("test_loss", "Test loss barrier"), ("test_acc", "Test accuracy barrier")):
        lines = [Line(epochs, [r["naive"][key] for r in rows], "naive", "black", "--", "o"),
                 Line(epochs, [r["weight"][key] for r in rows], "weight matching", "tab:green", "-", "o")]
        panels.append(Panel(lines, f"{ylabel} vs training time", "epoch", ylabel))
    return panels


def main(argv=None) -> dict:
    args = parse_args(argv)
    log = common.Log(args.quiet)
    t0 = time.perf_counter()
    out = args.out
    common.start_run(out)
    train_cfg = MNISTConfig(epochs=args.epochs)
    study_cfg = StudyConfig(ste_epochs=args.ste_epochs)
    mnist = load_mnist(args.data_dir)
    if args.smoke:
        mnist = _subset(mnist, 2000, 500)
        train_cfg = dataclasses.replace(train_cfg, features=(32, 32), batch_size=100, epochs=min(args.epochs, 2))
        study_cfg = dataclasses.replace(study_cfg, ste_epochs=min(args.ste_epochs, 1), ste_batch_size=100,
                                        eval_batch_size=1000)
    seeds = tuple(args.seeds)

    # 1. Train (or reuse) models A and B in one vmapped call.
    trained = train_mnist(mnist, train_cfg, seeds, ckpt_dir=out / "checkpoints", progress=not args.quiet)
    t_train = time.perf_counter() - t0
    log(f"models trained/loaded: test acc {[round(h[-1]['test_acc'], 4) for h in trained.history]}")
    params_a, params_b = unstack(trained.params, 0), unstack(trained.params, 1)
    model = train_cfg.model()
    x_tr, y_tr = _floats(mnist.train)
    x_te, y_te = _floats(mnist.test)

    # 2. A spec must be validated before any figure is drawn.
    spec = get_spec("mlp", num_hidden_layers=len(train_cfg.features))
    apply_fn = functools.partial(common.apply_logits, model)
    validate_spec(spec, params_a, apply_fn, x_te[:1000], key=jax.random.key(0))

    # 3. Every method.
    metric = ClassificationMetrics(model, batch_size=study_cfg.eval_batch_size)
    eb = study_cfg.eval_batch_size
    inputs = MatchingInputs(
        activations_fn=functools.partial(hidden_activations, model),
        activation_batches=[x_tr[i : i + 5000] for i in range(0, len(x_tr), 5000)],
        loss_fn=SupervisedLoss(metric),
        ste_batches=_ste_batches(x_tr, y_tr, study_cfg.ste_batch_size, seed=1000 + seeds[0]),
        ste_epochs=study_cfg.ste_epochs,
        ste_lr=study_cfg.ste_lr,
        ste_eval_batches=[(x_tr[i : i + eb], y_tr[i : i + eb]) for i in range(0, len(x_tr), eb)],
    )
    lambdas = [float(v) for v in jnp.linspace(0.0, 1.0, args.lambdas)]
    t1 = time.perf_counter()
    curves = compare_methods(
        key=jax.random.key(0), spec=spec, apply_fn=apply_fn, metric_fn=metric, params_a=params_a, params_b=params_b,
        splits={"train": (x_tr, y_tr), "test": (x_te, y_te)}, check_inputs=x_te, matching_inputs=inputs,
        methods=args.methods, variants={"all": ()}, lambdas=lambdas, perm_dir=out / "permutations",
        results_dir=out, progress=not args.quiet, log=log,
    )
    t_match = time.perf_counter() - t1

    # 4. Barrier vs training epoch.
    t2 = time.perf_counter()
    steps_per_epoch = len(mnist.train.labels) // train_cfg.batch_size
    epochs = args.barrier_epochs or default_barrier_epochs(train_cfg.epochs)
    rows = barrier_vs_epoch(out / "checkpoints", seeds, epochs, steps_per_epoch, spec, metric, x_te, y_te,
                            study_cfg.barrier_lambdas, log)
    t_epochs = time.perf_counter() - t2

    # 5. Results and figures.
    config = {"train": dataclasses.asdict(train_cfg), "study": dataclasses.asdict(study_cfg),
              "methods": list(args.methods), "smoke": args.smoke}
    results = common.pair_results(NAME, out, seeds, curves, config, lambdas)
    results["barrier_vs_epoch"] = rows
    fig_dir = out / "figures"
    common.interpolation_figures(results, fig_dir)
    plot(fig_dir / "barrier_vs_epoch.png", barrier_panels(rows),
         title=f"MNIST MLP: barrier between A and B at each epoch ({study_cfg.barrier_lambdas} lambdas, test set)")
    plot(fig_dir / "training_curves.png",
         history_panels({f"A (seed {seeds[0]})": trained.history[0], f"B (seed {seeds[1]})": trained.history[1]},
                        xlabel="step", xlog=False),
         title="MNIST MLP: training curves (train: mean over each epoch's minibatches)")
    total = time.perf_counter() - t0
    results["timing_seconds"] = {"train": t_train, "matching_and_curves": t_match, "barrier_vs_epoch": t_epochs,
                                 "total": total}
    common.finish(results, out, common.publish_dir(args, NAME), log)
    if not args.quiet:
        print(common.barrier_table(results))
        print(f"time: training {t_train:.1f}s, matching + curves {t_match:.1f}s, barrier vs epoch {t_epochs:.1f}s, "
              f"total {total:.1f}s (budget at 100 epochs: about 20 minutes on 2 CPU cores)")
    return results


if __name__ == "__main__":
    main()
