
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rebasin_jax.interpolate import curve_barriers, interpolation_curve, lerp, loss_barrier
from rebasin_jax.train import ClassificationMetrics
from tests.conftest import tiny_mlp


def test_lerp_endpoints():
    _, a, _ = tiny_mlp(seed=0)
    _, b, _ = tiny_mlp(seed=1)
    for lam, want in ((0.0, a), (1.0, b)):
        got = lerp(lam, a, b)
        for x, y in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_array_equal(x, y)
    mid = lerp(0.5, a, b)
    np.testing.assert_allclose(mid["Dense_0"]["kernel"], (a["Dense_0"]["kernel"] + b["Dense_0"]["kernel"]) / 2, rtol=1e-6)


@pytest.mark.parametrize("batch_size", [None, 2, 3, "auto"])
def test_curve_equals_python_loop(batch_size):
    model, a, x = tiny_mlp(seed=0)
    _, b, _ = tiny_mlp(seed=1)
    y = jnp.arange(x.shape[0]) % 5
    metric = ClassificationMetrics(model)
    lambdas = np.linspace(0, 1, 7)
    curve = interpolation_curve(metric, a, b, lambdas, x, y, batch_size=batch_size)
    for i, lam in enumerate(lambdas):
        want = metric(lerp(lam, a, b), x, y)
        np.testing.assert_allclose(curve["loss"][i], want["loss"], rtol=1e-5)
        np.testing.assert_allclose(curve["acc"][i], want["acc"], rtol=1e-6)
    assert curve["loss"].shape == (7,)


def test_auto_chunks_when_over_budget(monkeypatch):
    from rebasin_jax import interpolate

    model, a, x = tiny_mlp(seed=0)
    _, b, _ = tiny_mlp(seed=1)
    y = jnp.zeros(x.shape[0], jnp.int32)
    metric = ClassificationMetrics(model)
    lambdas = jnp.linspace(0, 1, 8)
    full = interpolate._program_bytes(metric, a, b, lambdas, (x, y), None)
    chosen = interpolate._auto_batch_size(metric, a, b, lambdas, (x, y), budget=full - 1)
    assert chosen is not None and chosen < 8
    assert interpolate._auto_batch_size(metric, a, b, lambdas, (x, y), budget=10 * full) is None
    small = interpolation_curve(metric, a, b, lambdas, x, y, memory_budget=full - 1)
    big = interpolation_curve(metric, a, b, lambdas, x, y, batch_size=None)
    np.testing.assert_allclose(small["loss"], big["loss"], rtol=1e-5)


def test_chunked_metric_equals_unchunked():
    model, a, x = tiny_mlp(seed=0)
    y = jnp.arange(x.shape[0]) % 5
    whole = ClassificationMetrics(model)(a, x, y)
    for bs in (5, 8, 31):
        part = ClassificationMetrics(model, batch_size=bs)(a, x, y)
        np.testing.assert_allclose(part["loss"], whole["loss"], rtol=1e-5)
        np.testing.assert_allclose(part["acc"], whole["acc"], rtol=1e-6)


def test_loss_barrier_hand_made():
    lambdas = [0.0, 0.25, 0.5, 0.75, 1.0]
    # endpoints 1 and 3 -> mean 2; peak 5 -> barrier 3
    assert loss_barrier([1, 2, 5, 3, 3], lambdas) == pytest.approx(3.0)
    # against the straight line: at 0.5 line is 2 -> 3; at 0.25 line 1.5 -> 0.5
    assert loss_barrier([1, 2, 5, 3, 3], lambdas, reference="linear") == pytest.approx(3.0)
    assert loss_barrier([1, 4, 2, 2.5, 3], lambdas, reference="linear") == pytest.approx(2.5)
    assert loss_barrier([1, 4, 2, 2.5, 3], lambdas) == pytest.approx(2.0)
    # convex curve: negative barrier against the mean
    assert loss_barrier([2, 1, 0.5, 1, 2], lambdas) == pytest.approx(0.0)
    assert loss_barrier([2, 1, 0.5, 1, 3], lambdas, reference="linear") == pytest.approx(0.0)
    # accuracy: drop below the endpoints' mean (0.95)
    assert loss_barrier([1.0, 0.8, 0.3, 0.8, 0.9], lambdas, higher_is_better=True) == pytest.approx(0.65)
    # endpoints need not be first/last in the array
    assert loss_barrier([5, 1, 3], [0.5, 0.0, 1.0]) == pytest.approx(3.0)


def test_loss_barrier_errors():
    with pytest.raises(ValueError, match="endpoints"):
        loss_barrier([1, 2], [0.1, 0.9])
    with pytest.raises(ValueError, match="reference"):
        loss_barrier([1, 2], [0, 1], reference="max")


def test_curve_barriers_treats_acc_as_higher_better():
    lambdas = [0.0, 0.5, 1.0]
    out = curve_barriers({"test_loss": [1.0, 2.0, 1.0], "test_acc": [1.0, 0.5, 1.0]}, lambdas)
    assert out == {"test_loss": pytest.approx(1.0), "test_acc": pytest.approx(0.5)}
