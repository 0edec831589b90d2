"""Git Re-Basin on MLPs that grok modular addition (the ported study).

    python -m experiments.modular_addition [--out runs/modular_addition] [--seeds 0 1] [--smoke]

Trains models A and B (one vmapped call, checkpoints reused), validates the
spec, runs weight / activation / STE matching in three variants -- ``all``,
``no_embed`` (embedding permutation at identity) and ``no_both`` (embedding and
the last hidden layer's permutation, which touches the unembedding, at
identity) -- checks that every permuted B computes B's function, evaluates the
interpolation at 25 lambdas on train and test data, and writes results.json,
permutations and figures.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp

from experiments import common
from rebasin_jax.data import modular_addition_data
from rebasin_jax.metrics import ClassificationMetrics, SupervisedLoss
from rebasin_jax.models import EMBED_PERM, hidden_activations
from rebasin_jax.plotting import history_panels, plot
from rebasin_jax.spec import get_spec, validate_spec
from rebasin_jax.study import MatchingInputs, compare_methods
from rebasin_jax.train import (
    ModularAdditionConfig,
    train_modular_addition,
    unstack,
)

NAME = "modular_addition"
SMOKE = dict(p=23, d=16, hidden=(32, 16), max_steps=300, log_every=50, checkpoint_every=50)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Matching settings (training settings live in ``ModularAdditionConfig``)."""

    ste_epochs: int = 50
    ste_lr: float = 1e-3
    ste_batch_size: int = 1024


def variants(num_hidden: int) -> dict[str, tuple[str, ...]]:
    return {"all": (), "no_embed": (EMBED_PERM,), "no_both": (EMBED_PERM, f"P_{num_hidden - 1}")}


def parse_args(argv=None):
    parser = common.base_parser(NAME, __doc__.split("\n\n")[0])
    d = ModularAdditionConfig()
    parser.add_argument("--max-steps", type=int, default=d.max_steps, help="training step budget (default: %(default)s)")
    parser.add_argument("--embed-mode", choices=("sum", "concat"), default=d.embed_mode,
                        help="combine the two token embeddings by sum or concatenation (default: %(default)s)")
    parser.add_argument("--ste-epochs", type=int, default=StudyConfig.ste_epochs,
                        help="STE passes over the training set (default: %(default)s)")
    args = parser.parse_args(argv)
    common.check_args(parser, args)
    if args.max_steps < d.log_every and not args.smoke:
        parser.error(f"--max-steps must be at least {d.log_every}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    log = common.Log(args.quiet)
    t0 = time.perf_counter()
    out = args.out
    common.start_run(out)
    train_cfg = ModularAdditionConfig(max_steps=args.max_steps, embed_mode=args.embed_mode)
    study_cfg = StudyConfig(ste_epochs=args.ste_epochs)
    if args.smoke:
        train_cfg = dataclasses.replace(train_cfg, **SMOKE)
        study_cfg = dataclasses.replace(study_cfg, ste_epochs=min(args.ste_epochs, 3), ste_batch_size=128)

    # 1. Train (or reuse) models A and B in one vmapped call.
    data = modular_addition_data(train_cfg.p, train_cfg.train_frac, train_cfg.data_seed)
    seeds = tuple(args.seeds)
    trained = train_modular_addition(train_cfg, seeds, ckpt_dir=out / "checkpoints", data=data, progress=not args.quiet)
    t_train = time.perf_counter() - t0
    log(f"models trained/loaded: steps {list(map(int, trained.steps))}, "
        f"test acc {[round(h[-1]['test_acc'], 4) for h in trained.history]}")
    params_a, params_b = unstack(trained.params, 0), unstack(trained.params, 1)
    model = train_cfg.model()
    x_tr, y_tr = jnp.asarray(data.train.images), jnp.asarray(data.train.labels)
    x_te, y_te = jnp.asarray(data.test.images), jnp.asarray(data.test.labels)
    x_all = jnp.concatenate([x_tr, x_te])

    # 2. A spec must be validated before any figure is drawn.
    spec = get_spec(
        "modular_addition_mlp", num_hidden_layers=len(train_cfg.hidden), embed_mode=train_cfg.embed_mode,
        use_bias=train_cfg.use_bias)
    apply_fn = functools.partial(common.apply_logits, model)
    validate_spec(spec, params_a, apply_fn, x_all, key=jax.random.key(0))

    # 3. Every method x variant.
    metric = ClassificationMetrics(model)
    bs = study_cfg.ste_batch_size
    inputs = MatchingInputs(
        activations_fn=functools.partial(hidden_activations, model),
        activation_batches=[x_tr[i : i + 2048] for i in range(0, len(x_tr), 2048)],
        loss_fn=SupervisedLoss(metric),
        ste_batches=[(x_tr[i : i + bs], y_tr[i : i + bs]) for i in range(0, len(x_tr), bs)],
        ste_epochs=study_cfg.ste_epochs,
        ste_lr=study_cfg.ste_lr,
        ste_eval_batches=[(x_tr, y_tr)],
    )
    lambdas = [float(v) for v in jnp.linspace(0.0, 1.0, args.lambdas)]
    t1 = time.perf_counter()
    curves = compare_methods(
        key=jax.random.key(0), spec=spec, apply_fn=apply_fn, metric_fn=metric, params_a=params_a, params_b=params_b,
        splits={"train": (x_tr, y_tr), "test": (x_te, y_te)}, check_inputs=x_all, matching_inputs=inputs,
        methods=args.methods, variants=variants(len(train_cfg.hidden)), lambdas=lambdas,
        perm_dir=out / "permutations", results_dir=out, progress=not args.quiet, log=log,
    )
    t_match = time.perf_counter() - t1

    # 4. Results and figures.
    config = {"train": dataclasses.asdict(train_cfg), "study": dataclasses.asdict(study_cfg),
              "methods": list(args.methods), "smoke": args.smoke}
    results = common.pair_results(NAME, out, seeds, curves, config, lambdas)
    fig_dir = out / "figures"
    common.interpolation_figures(results, fig_dir)
    plot(fig_dir / "grokking_curves.png",
         history_panels({f"A (seed {seeds[0]})": trained.history[0], f"B (seed {seeds[1]})": trained.history[1]}),
         title="Modular addition: training curves of models A and B")
    total = time.perf_counter() - t0
    results["timing_seconds"] = {"train": t_train, "matching_and_curves": t_match, "total": total}
    common.finish(results, out, common.publish_dir(args, NAME), log)
    if not args.quiet:
        print(common.barrier_table(results))
        print(f"time: training {t_train:.1f}s, matching + curves {t_match:.1f}s, total {total:.1f}s "
              f"(budget for the default run: a few minutes on 2 CPU cores)")
    return results


if __name__ == "__main__":
    main()
