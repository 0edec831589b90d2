import jax
import numpy as np
import pytest

from rebasin_jax.interpolate import lerp
from rebasin_jax.matching.ste import ste_matching
from rebasin_jax.matching.weight import weight_matching
from rebasin_jax.models import modular_addition_mlp_spec
from rebasin_jax.spec import SpecError, apply_permutation
from rebasin_jax.train import ClassificationMetrics
from tests.conftest import tiny_modadd

MODEL, PARAMS_A, X = tiny_modadd(p=13, d=10, hidden=(20, 14))
_, PARAMS_B, _ = tiny_modadd(p=13, d=10, hidden=(20, 14), seed=1)
Y = (X[:, 0] + X[:, 1]) % 13
SPEC = modular_addition_mlp_spec()
METRIC = ClassificationMetrics(MODEL)


def loss_fn(params, batch):
    return METRIC(params, *batch)["loss"]


def _midpoint(perm):
    return float(loss_fn(lerp(0.5, PARAMS_A, apply_permutation(SPEC, perm, PARAMS_B)), (X, Y)))


def test_ste_is_no_worse_than_weight_matching_start():
    batches = [(X[:85], Y[:85]), (X[85:], Y[85:])]
    perm, info = ste_matching(jax.random.key(0), SPEC, PARAMS_A, PARAMS_B, loss_fn, batches,
                              epochs=5, lr=1e-2, eval_batches=[(X, Y)], return_info=True)
    wm = weight_matching(jax.random.key(0), SPEC, PARAMS_A, PARAMS_B)
    assert info.eval_losses[0] == pytest.approx(_midpoint(wm), rel=1e-5)
    assert _midpoint(perm) <= _midpoint(wm) + 1e-6
    assert _midpoint(perm) == pytest.approx(min(info.eval_losses), rel=1e-5)
    assert len(info.step_losses) == 10 and len(info.eval_losses) == 6 and info.seconds > 0
    # warm-started projections need few sweeps
    assert np.mean(info.projection_sweeps) < 4


def test_deterministic_fixed_and_random_lambda():
    batches = lambda epoch: [(X[epoch::2], Y[epoch::2])]  # new data order per epoch
    kw = dict(epochs=3, lr=1e-2, fixed=("P_embed",), random_lambda=True)
    p1 = ste_matching(jax.random.key(1), SPEC, PARAMS_A, PARAMS_B, loss_fn, batches, **kw)
    p2 = ste_matching(jax.random.key(1), SPEC, PARAMS_A, PARAMS_B, loss_fn, batches, **kw)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    np.testing.assert_array_equal(p1["P_embed"], np.arange(10))


def test_errors():
    _, other, _ = tiny_modadd(p=13, d=10, hidden=(20, 16), seed=1)
    with pytest.raises(SpecError, match="differ at 'Dense_1/kernel': shape \\(20, 14\\) vs \\(20, 16\\)"):
        ste_matching(jax.random.key(0), SPEC, PARAMS_A, other, loss_fn, [(X, Y)], epochs=1)
    with pytest.raises(SpecError, match="unknown permutations"):
        ste_matching(jax.random.key(0), SPEC, PARAMS_A, PARAMS_B, loss_fn, [(X, Y)], fixed=("emb",))
    with pytest.raises(ValueError, match="no batches"):
        ste_matching(jax.random.key(0), SPEC, PARAMS_A, PARAMS_B, loss_fn, [], epochs=1)
