"""Both experiment modules end to end at --smoke size, in a temp dir."""

import json

import jax
import numpy as np
import pytest

from experiments import mnist_mlp, modular_addition
from rebasin_jax.checkpoint import load_model
from rebasin_jax.spec import apply_permutation
from rebasin_jax.study import load_permutation, validate_results


def _check_run(out, results, figures):
    on_disk = json.loads((out / "results.json").read_text())
    validate_results(on_disk)
    assert on_disk["curves"].keys() == results["curves"].keys()
    for name in figures:
        assert (out / "figures" / name).stat().st_size > 5000, name
    # every permuted endpoint reproduces model B
    model, spec, params_b, _ = load_model(out / on_disk["models"]["b"]["checkpoint"])
    for name, curve in on_disk["curves"].items():
        if name == "naive":
            continue
        perm = load_permutation(out / curve["permutation"])
        assert curve["seconds"] >= 0
        permuted = apply_permutation(spec, perm, params_b)
        x = _inputs(model)
        np.testing.assert_allclose(model.apply({"params": permuted}, x), model.apply({"params": params_b}, x),
                                   atol=1e-4, rtol=1e-4)
        # the curve's lambda=1 end is B itself
        assert curve["test_loss"][-1] == pytest.approx(on_disk["models"]["b"]["test_loss"], rel=1e-4)
    assert on_disk["curves"]["naive"]["test_loss"][0] == pytest.approx(on_disk["models"]["a"]["test_loss"], rel=1e-5)


def _inputs(model):
    if hasattr(model, "p"):
        a, b = np.meshgrid(np.arange(model.p), np.arange(model.p), indexing="ij")
        return np.stack([a.ravel(), b.ravel()], axis=1)
    return np.asarray(jax.random.uniform(jax.random.key(0), (64, model.input_dim)))


def test_modular_addition_smoke(tmp_path):
    out = tmp_path / "run"
    results = modular_addition.main(["--smoke", "--quiet", "--out", str(out)])
    assert len(results["lambdas"]) == 25
    expected = {f"{m}/{v}" for m in ("weight", "activation", "ste") for v in ("all", "no_embed", "no_both")}
    assert set(results["curves"]) == expected | {"naive"}
    for v in ("no_embed", "no_both"):
        perm = load_permutation(out / results["curves"][f"weight/{v}"]["permutation"])
        np.testing.assert_array_equal(perm["P_embed"], np.arange(len(perm["P_embed"])))
    perm = load_permutation(out / results["curves"]["weight/no_both"]["permutation"])
    np.testing.assert_array_equal(perm["P_1"], np.arange(len(perm["P_1"])))
    figures = ["summary.png", "grokking_curves.png"] + [
        f"interp_{w}_{m}_{v}.png" for w in ("loss", "accuracy") for m in ("weight", "activation", "ste")
        for v in ("all", "no_embed", "no_both")]
    _check_run(out, results, figures)
    assert not (tmp_path / "plots").exists()  # smoke runs publish nothing by default

    # A second run reuses the checkpoints (trains nothing) and can publish.
    ckpts = sorted((out / "checkpoints").rglob("*.ckpt"))
    mtimes = [p.stat().st_mtime_ns for p in ckpts]
    again = modular_addition.main(["--smoke", "--quiet", "--out", str(out), "--methods", "weight",
                                   "--publish", str(tmp_path / "pub")])
    assert [p.stat().st_mtime_ns for p in sorted((out / "checkpoints").rglob("*.ckpt"))] == mtimes
    assert set(again["curves"]) == {"naive", "weight/all", "weight/no_embed", "weight/no_both"}
    assert again["curves"]["naive"] == results["curves"]["naive"]
    assert (tmp_path / "pub" / "results.json").exists() and (tmp_path / "pub" / "permutations" / "weight_all.npz").exists()
    assert not (tmp_path / "pub" / "interp_loss_ste_all.png").exists()  # only this run's figures
    assert not (out / "permutations" / "ste_all.npz").exists()  # stale outputs removed


def test_mnist_smoke(tmp_path, mnist_path):
    out = tmp_path / "run"
    results = mnist_mlp.main(["--smoke", "--quiet", "--out", str(out), "--data-dir", str(mnist_path)])
    assert set(results["curves"]) == {"naive", "weight/all", "activation/all", "ste/all"}
    assert [r["epoch"] for r in results["barrier_vs_epoch"]] == [1, 2]
    figures = ["summary.png", "barrier_vs_epoch.png", "training_curves.png"] + [
        f"interp_{w}_{m}_all.png" for w in ("loss", "accuracy") for m in ("weight", "activation", "ste")]
    _check_run(out, results, figures)


@pytest.mark.parametrize("module", [modular_addition, mnist_mlp])
def test_help_and_bad_flags(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--seeds", "--methods", "--smoke"):
        assert flag in text
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--seeds", "3", "3"])
    assert exit_info.value.code == 2
    assert "different seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.main(["--methods", "magic"])


def test_grokking_connectivity_smoke(tmp_path):
    from experiments import grokking_connectivity

    out = tmp_path / "run"
    results = grokking_connectivity.main(["--smoke", "--quiet", "--out", str(out), "--num-seeds", "3"])
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["summary"]["pairs"] == 3 == len(on_disk["pairs"])
    assert [r["step"] for r in on_disk["transition"]] == [50, 100, 150, 200]
    for row in on_disk["pairs"]:
        assert 0.0 <= row["jaccard"] <= 1.0
        for method in ("naive", "weight", "orthogonal"):
            assert np.isfinite(row[method]["test_loss"])
        assert set(row["neuron_agreement"]) == {"P_0", "P_1"}
    assert len(on_disk["models"]) == 3 and all(len(m["embedding_frequency_norms"]) == 11 for m in on_disk["models"])
    assert set(on_disk["controls"]) == {"same_init_other_split", "spawn_50", "spawn_100", "independent_reference"}
    assert all(np.isfinite(c["weight"]["test_loss"]) for c in on_disk["controls"].values())
    for name in ("barrier_vs_step.png", "barrier_vs_jaccard.png", "embedding_spectra.png"):
        assert (out / "figures" / name).stat().st_size > 5000
    assert results["summary"]["mean_barrier"] == on_disk["summary"]["mean_barrier"]
    assert set(on_disk["summary"]["mean_barrier"]) == {"naive", "weight", "orthogonal"}
