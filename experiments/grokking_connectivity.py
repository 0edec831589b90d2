"""Do grokked networks share a basin? Barriers across grokking, Fourier structure, controls.

    python -m experiments.grokking_connectivity [--out runs/grokking_connectivity] [--smoke]

1. Transition: models A and B trained without early stopping, checkpointed
   every ``--transition-every`` steps; naive and weight-matched barriers at
   every checkpoint, against both models' test accuracy.
2. Fourier: ``--num-seeds`` models trained in one vmapped call; each model's
   key frequencies (Fourier norms of its embedding) and each neuron's dominant
   frequency; for every pair, the barrier after matching against the overlap
   (Jaccard) of the key-frequency sets and the fraction of matched neurons
   that share a frequency.
3. Controls: B trained from A's initialisation, or spawned from A's
   checkpoint at step k, on another train split (positive controls), and an
   orthogonal (Procrustes) alignment of the embedding space together with the
   hidden-unit permutations.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from rebasin_jax.checkpoint import atomic_write_json, load_checkpoint, step_checkpoint_path
from rebasin_jax.data import modular_addition_data
from rebasin_jax.fourier import embedding_frequency_norms, jaccard, key_frequencies, neuron_frequencies
from rebasin_jax.matching.orthogonal import align, orthogonal_weight_matching
from rebasin_jax.matching.weight import weight_matching
from rebasin_jax.metrics import ClassificationMetrics
from rebasin_jax.models import EMBED_PERM, hidden_activations
from rebasin_jax.plotting import Line, Panel, plot
from rebasin_jax.spec import apply_permutation, get_spec, validate_spec
from rebasin_jax.study import assert_same_function, evaluate_curves
from rebasin_jax.train import ModularAdditionConfig, train_modular_addition, unstack

NAME = "grokking_connectivity"
SMOKE = dict(p=23, d=16, hidden=(32, 16), max_steps=300, log_every=50, checkpoint_every=50)
KEY_FRACTIONS = (0.1, 0.2, 0.3)


def parse_args(argv=None):
    parser = common.base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--num-seeds", type=int, default=8, help="models for the pairwise study (default: %(default)s)")
    parser.add_argument("--transition-steps", type=int, default=5000,
                        help="training steps of the transition pair, no early stop (default: %(default)s)")
    parser.add_argument("--transition-every", type=int, default=100,
                        help="checkpoint spacing of the transition pair (default: %(default)s)")
    parser.add_argument("--spawn-steps", type=int, nargs="*", default=[500, 2000],
                        help="positive controls spawned from A's checkpoints at these steps (default: 500 2000)")
    parser.add_argument("--key-fraction", type=float, default=0.2,
                        help="a frequency is 'key' if its squared embedding norm is at least this fraction of "
                             "the largest (default: %(default)s)")
    args = parser.parse_args(argv)
    common.check_args(parser, args)
    if args.num_seeds < 2:
        parser.error("--num-seeds must be at least 2")
    if args.transition_steps % args.transition_every:
        parser.error("--transition-steps must be a multiple of --transition-every")
    bad = [k for k in args.spawn_steps if k % args.transition_every or not 0 < k <= args.transition_steps]
    if bad and not args.smoke:
        parser.error(f"--spawn-steps {bad}: must be multiples of --transition-every within the transition run")
    return args


def _all_inputs(p: int):
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    x = np.stack([a.ravel(), b.ravel()], axis=1).astype(np.int32)
    return jnp.asarray(x), jnp.asarray((x[:, 0] + x[:, 1]) % p)


def _barriers(metric, pa, pb, lambdas, split):
    c = evaluate_curves(metric, pa, pb, lambdas, {"test": split})
    return {"test_loss": c["barrier"]["test_loss"], "test_acc": c["barrier"]["test_acc"],
            "midpoint_test_acc": c["test_acc"][len(lambdas) // 2]}


def transition_study(cfg, seeds, out, every, spec, metric, split, lambdas, log, progress):
    """Barriers at every shared checkpoint of a pair trained without early stopping."""
    cfg = dataclasses.replace(cfg, stop_test_loss=0.0, checkpoint_every=every,
                              log_every=min(cfg.log_every, every))
    trained = train_modular_addition(cfg, seeds, ckpt_dir=out / "checkpoints" / "transition", progress=progress)
    acc = [{h["step"]: h["test_acc"] for h in hist} for hist in trained.history]
    rows = []
    for step in range(every, cfg.max_steps + 1, every):
        pa, pb = (load_checkpoint(step_checkpoint_path(out / "checkpoints" / "transition", s, step)).params
                  for s in seeds)
        perm = weight_matching(jax.random.key(step), spec, pa, pb)
        rows.append({"step": step, "test_acc_a": acc[0][step], "test_acc_b": acc[1][step],
                     "naive": _barriers(metric, pa, pb, lambdas, split),
                     "weight": _barriers(metric, pa, apply_permutation(spec, perm, pb), lambdas, split)})
    log(f"transition: {len(rows)} checkpoints; final WM test-loss barrier {rows[-1]['weight']['test_loss']:.3f}")
    return rows


def model_fourier(model, params, x_all, p, key_fraction):
    norms = embedding_frequency_norms(params["Embed_0"]["embedding"])
    acts = hidden_activations(model, params, x_all)
    neurons = {name: neuron_frequencies(np.asarray(acts[name]).reshape(p, p, -1))
               for name in acts if name != EMBED_PERM}
    return norms, {f: key_frequencies(norms, f) for f in (*KEY_FRACTIONS, key_fraction)}, neurons


def _agreement(dom_a, dom_b, perm):
    """Fraction of matched neuron pairs with the same dominant frequency, and its chance level."""
    matched = float(np.mean(dom_a == dom_b[np.asarray(perm)]))
    ka, ca = np.unique(dom_a, return_counts=True)
    kb, cb = np.unique(dom_b, return_counts=True)
    pb = dict(zip(kb.tolist(), (cb / cb.sum()).tolist()))
    chance = float(sum(c / ca.sum() * pb.get(k, 0.0) for k, c in zip(ka.tolist(), ca.tolist())))
    return matched, chance


def _pearson(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


class Setting(NamedTuple):
    """What every part of the study shares."""

    cfg: ModularAdditionConfig
    model: Any
    spec: Any
    metric: ClassificationMetrics
    apply_fn: Any
    lambdas: list
    test: tuple  # (x, y) of the test split
    everything: tuple  # (x, y) of all p^2 pairs
    key_fraction: float
    progress: bool


def pairs_study(st: Setting, params, fourier, seeds, log) -> list[dict]:
    """Naive, weight-matched and orthogonally aligned barriers of every pair, with
    key-frequency overlap and matched-neuron frequency agreement."""
    pairs = []
    for i, j in itertools.combinations(range(len(seeds)), 2):
        pa, pb = params[i], params[j]
        key = jax.random.key(1000 * i + j)
        wm = weight_matching(key, st.spec, pa, pb)
        wm_no_embed = weight_matching(key, st.spec, pa, pb, fixed=(EMBED_PERM,))
        orth = orthogonal_weight_matching(key, st.spec, pa, pb, orthogonal=(EMBED_PERM,), init_perm=wm_no_embed)
        aligned = {"weight": apply_permutation(st.spec, wm, pb), "orthogonal": align(st.spec, orth, pb)}
        for name, pb_aligned in aligned.items():
            assert_same_function(st.apply_fn, pb, pb_aligned, st.everything[0], what=f"pair {seeds[i]}-{seeds[j]} {name}")
        keys_i, keys_j = fourier[i][1], fourier[j][1]
        row = {"seeds": [seeds[i], seeds[j]],
               "jaccard": jaccard(keys_i[st.key_fraction], keys_j[st.key_fraction]),
               "jaccard_by_fraction": {str(f): jaccard(keys_i[f], keys_j[f]) for f in KEY_FRACTIONS},
               "naive": _barriers(st.metric, pa, pb, st.lambdas, st.test),
               **{name: _barriers(st.metric, pa, q, st.lambdas, st.test) for name, q in aligned.items()},
               "neuron_agreement": {}}
        for name in fourier[i][2]:
            matched, chance = _agreement(fourier[i][2][name].dominant, fourier[j][2][name].dominant, wm[name])
            row["neuron_agreement"][name] = {"matched": matched, "chance": chance}
        pairs.append(row)
    log(f"{len(pairs)} pairs analysed")
    return pairs


def controls_study(st: Setting, out, seeds, spawn_steps, anchor, other, log) -> dict:
    """Positive controls against A (``anchor``) on all p^2 pairs -- the controls
    train on another split, so no test set is shared: B from A's initialisation,
    and B spawned from A's step-k checkpoint (Frankle et al. 2020), both trained
    on another split; plus the independent pair (A, ``other``) on the same measure."""
    cfg_ctrl = dataclasses.replace(st.cfg, data_seed=st.cfg.data_seed + 1)
    anchor_keys = model_fourier(st.model, anchor, st.everything[0], st.cfg.p, st.key_fraction)[1][st.key_fraction]
    candidates = {"same_init_other_split": (f"seed {seeds[0]}'s initialisation trained on split {cfg_ctrl.data_seed}",
                                            None)}
    for k in spawn_steps:
        start = load_checkpoint(step_checkpoint_path(out / "checkpoints" / "transition", seeds[0], k)).params
        candidates[f"spawn_{k}"] = (f"spawned from A's step-{k} checkpoint, trained on split {cfg_ctrl.data_seed}", start)
    controls = {}
    for name, (description, start) in candidates.items():
        trained = train_modular_addition(cfg_ctrl, (seeds[0],), ckpt_dir=out / "checkpoints" / f"control_{name}",
                                         progress=st.progress, init_params=None if start is None else [start])
        p_ctrl = unstack(trained.params, 0)
        wm = weight_matching(jax.random.key(7), st.spec, anchor, p_ctrl)
        keys = model_fourier(st.model, p_ctrl, st.everything[0], st.cfg.p, st.key_fraction)[1][st.key_fraction]
        controls[name] = {"description": description, "key_frequencies": list(keys),
                          "jaccard": jaccard(anchor_keys, keys), "steps": int(trained.steps[0]),
                          "naive": _barriers(st.metric, anchor, p_ctrl, st.lambdas, st.everything),
                          "weight": _barriers(st.metric, anchor, apply_permutation(st.spec, wm, p_ctrl), st.lambdas,
                                              st.everything)}
        log(f"control {name}: naive barrier {controls[name]['naive']['test_loss']:.3f}, "
            f"weight matching {controls[name]['weight']['test_loss']:.3f}")
    wm = weight_matching(jax.random.key(7), st.spec, anchor, other)
    controls["independent_reference"] = {
        "description": f"seed {seeds[0]} vs seed {seeds[1]} (independent), same measure",
        "naive": _barriers(st.metric, anchor, other, st.lambdas, st.everything),
        "weight": _barriers(st.metric, anchor, apply_permutation(st.spec, wm, other), st.lambdas, st.everything)}
    return controls


def _col(pairs, key, sub="test_loss"):
    return [r[key][sub] for r in pairs]


def summarise(pairs) -> dict:
    jac = [r["jaccard"] for r in pairs]
    methods = ("naive", "weight", "orthogonal")
    return {
        "pairs": len(pairs),
        "mean_barrier": {k: float(np.mean(_col(pairs, k))) for k in methods},
        "mean_acc_barrier": {k: float(np.mean(_col(pairs, k, "test_acc"))) for k in methods},
        "pearson_jaccard_vs_weight_barrier": _pearson(jac, _col(pairs, "weight")),
        "pearson_jaccard_vs_weight_barrier_by_fraction": {
            str(f): _pearson([r["jaccard_by_fraction"][str(f)] for r in pairs], _col(pairs, "weight"))
            for f in KEY_FRACTIONS},
        "orthogonal_lower_than_weight": int(sum(o < w for o, w in zip(_col(pairs, "orthogonal"), _col(pairs, "weight")))),
        "mean_neuron_agreement": {n: {k: float(np.mean([r["neuron_agreement"][n][k] for r in pairs]))
                                      for k in ("matched", "chance")} for n in pairs[0]["neuron_agreement"]},
    }


def draw_figures(results: dict, fig_dir, seeds, p: int) -> None:
    transition, pairs, models = results["transition"], results["pairs"], results["models"]
    steps = [r["step"] for r in transition]

    def along(key, sub):
        return [r[key][sub] for r in transition]

    plot(fig_dir / "barrier_vs_step.png", [
        Panel([Line(steps, along("naive", "test_loss"), "naive", "black", "--"),
               Line(steps, along("weight", "test_loss"), "weight matching", "tab:green")],
              "Test loss barrier", "training step", "barrier"),
        Panel([Line(steps, along("naive", "test_acc"), "naive", "black", "--"),
               Line(steps, along("weight", "test_acc"), "weight matching", "tab:green")],
              "Test accuracy barrier", "training step", "drop below endpoints"),
        Panel([Line(steps, [r["test_acc_a"] for r in transition], f"A (seed {seeds[0]})", "tab:blue"),
               Line(steps, [r["test_acc_b"] for r in transition], f"B (seed {seeds[1]})", "tab:orange")],
              "Test accuracy of the endpoints", "training step", "accuracy"),
    ], title="Barrier between A and B across the grokking transition (checkpoints at equal steps)")
    jac = [r["jaccard"] for r in pairs]
    layers = list(zip(pairs[0]["neuron_agreement"], ("tab:blue", "tab:red")))
    plot(fig_dir / "barrier_vs_jaccard.png", [
        Panel([Line(jac, _col(pairs, "naive"), "naive", "black", "", "x"),
               Line(jac, _col(pairs, "weight"), "weight matching", "tab:green", "", "o"),
               Line(jac, _col(pairs, "orthogonal"), "WM + orthogonal embedding", "tab:purple", "", "^")],
              "Barrier vs key-frequency overlap", "Jaccard overlap of key frequencies", "test loss barrier"),
        Panel([Line(jac, [r["neuron_agreement"][n]["matched"] for r in pairs], f"{n} matched", c, "", "o")
               for n, c in layers] +
              [Line(jac, [r["neuron_agreement"][n]["chance"] for r in pairs], f"{n} chance", c, "", ".")
               for n, c in layers],
              "Matched neurons sharing a dominant frequency", "Jaccard overlap of key frequencies", "fraction"),
    ], title=f"{len(pairs)} pairs of grokked models (one point per pair)")
    ks = np.arange(1, p // 2 + 1)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    plot(fig_dir / "embedding_spectra.png", [
        Panel([Line(ks, m["embedding_frequency_norms"], f"seed {m['seed']}", c, "-", ".") for m, c in zip(models, colors)],
              "Fourier norm of the embedding per frequency", "frequency k", "norm")],
        title="Grokked embeddings are sparse in frequency, and seeds pick different frequencies")


def main(argv=None) -> dict:
    args = parse_args(argv)
    log = common.Log(args.quiet)
    t0 = time.perf_counter()
    out = args.out
    common.start_run(out)
    cfg = ModularAdditionConfig()
    transition_steps, every, spawn_steps = args.transition_steps, args.transition_every, tuple(args.spawn_steps)
    if args.smoke:
        cfg = dataclasses.replace(cfg, **SMOKE)
        transition_steps, every, spawn_steps = 200, 50, (50, 100)
    model = cfg.model()
    spec = get_spec("modular_addition_mlp", num_hidden_layers=len(cfg.hidden), embed_mode=cfg.embed_mode,
                    use_bias=cfg.use_bias)
    data = modular_addition_data(cfg.p, cfg.train_frac, cfg.data_seed)
    x_all, y_all = _all_inputs(cfg.p)
    st = Setting(cfg, model, spec, ClassificationMetrics(model), functools.partial(common.apply_logits, model),
                 [float(v) for v in jnp.linspace(0.0, 1.0, args.lambdas)],
                 (jnp.asarray(data.test.images), jnp.asarray(data.test.labels)), (x_all, y_all), args.key_fraction,
                 not args.quiet)
    # A spec must be validated before any result is computed from it.
    validate_spec(spec, model.init(jax.random.key(0), x_all[:1])["params"], st.apply_fn, x_all, key=jax.random.key(0))

    # 1. Barrier across the grokking transition.
    seeds = tuple(args.seeds)
    transition = transition_study(dataclasses.replace(cfg, max_steps=transition_steps), seeds, out, every, spec,
                                  st.metric, st.test, st.lambdas, log, st.progress)
    t_transition = time.perf_counter() - t0

    # 2. Many seeds: Fourier structure vs barrier.
    all_seeds = tuple(range(args.num_seeds if not args.smoke else min(args.num_seeds, 3)))
    trained = train_modular_addition(cfg, all_seeds, ckpt_dir=out / "checkpoints" / "seeds", data=data,
                                     progress=st.progress)
    params = [unstack(trained.params, i) for i in range(len(all_seeds))]
    fourier = [model_fourier(model, p, x_all, cfg.p, args.key_fraction) for p in params]
    models = [{"seed": seed, "steps": int(trained.steps[i]), "test_acc": trained.history[i][-1]["test_acc"],
               "test_loss": trained.history[i][-1]["test_loss"],
               "key_frequencies": list(fourier[i][1][args.key_fraction]),
               "embedding_frequency_norms": [float(v) for v in fourier[i][0]],
               "neuron_frequency_fraction": {n: float(v.fraction.mean()) for n, v in fourier[i][2].items()}}
              for i, seed in enumerate(all_seeds)]
    log(f"{len(all_seeds)} models: key frequencies {[m['key_frequencies'] for m in models]}")
    pairs = pairs_study(st, params, fourier, all_seeds, log)
    t_pairs = time.perf_counter() - t0 - t_transition

    # 3. Controls.
    anchor = unstack(train_modular_addition(cfg, (seeds[0],), ckpt_dir=out / "checkpoints" / "seeds", data=data,
                                            progress=st.progress).params, 0)
    other = params[all_seeds.index(seeds[1])] if seeds[1] in all_seeds else params[1]
    controls = controls_study(st, out, seeds, spawn_steps, anchor, other, log)

    summary = summarise(pairs)
    results = {"experiment": NAME,
               "config": {"train": dataclasses.asdict(cfg), "transition_steps": transition_steps,
                          "transition_every": every, "spawn_steps": list(spawn_steps), "key_fraction": args.key_fraction,
                          "lambdas": len(st.lambdas), "smoke": args.smoke},
               "transition": transition, "models": models, "pairs": pairs, "controls": controls, "summary": summary}
    draw_figures(results, out / "figures", seeds, cfg.p)
    total = time.perf_counter() - t0
    results["timing_seconds"] = {"transition": t_transition, "pairs": t_pairs, "total": total}
    atomic_write_json(out / "results.json", results)
    pub = common.publish_dir(args, NAME)
    if pub is not None:
        common.publish_files(out, pub, log)
    if not args.quiet:
        print(f"mean test-loss barrier over {len(pairs)} pairs: " +
              ", ".join(f"{k} {v:.3f}" for k, v in summary["mean_barrier"].items()))
        print(f"Pearson(Jaccard, WM barrier) = {summary['pearson_jaccard_vs_weight_barrier']:.3f}; total {total:.0f}s")
    return results


if __name__ == "__main__":
    main()
