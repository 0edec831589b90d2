import dataclasses
import json

import jax
import numpy as np
import pytest

from rebasin_jax import train as T
from rebasin_jax.checkpoint import CheckpointError, load_model
from rebasin_jax.spec import validate_spec
from tests.conftest import synthetic_mnist

# A small modular-addition problem that groks within ~1000 full-batch steps.
GROK = T.ModularAdditionConfig(p=31, d=32, hidden=(64, 32), train_frac=0.6, lr=3e-3, max_steps=2500,
                               log_every=50, checkpoint_every=50, stop_test_loss=1e-3)
SHORT = dataclasses.replace(GROK, max_steps=300)


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_tiny_modular_addition_groks(tmp_path):
    result = T.train_modular_addition(GROK, seeds=(0, 1), ckpt_dir=tmp_path, progress=False)
    for hist in result.history:
        # memorisation first: train accuracy ~1 while test accuracy is still low ...
        assert any(h["train_acc"] > 0.99 and h["test_acc"] < 0.8 for h in hist)
        # ... then generalisation, stopped by the test-loss criterion
        assert hist[-1]["test_acc"] > 0.99 and hist[-1]["test_loss"] < GROK.stop_test_loss
    assert np.all(result.steps < GROK.max_steps)
    # history.json next to the checkpoints, and the final checkpoint loads as a model
    saved = json.loads((tmp_path / "seed_1" / "history.json").read_text())
    assert saved == result.history[1]
    last_step, last_path = T.list_step_checkpoints(tmp_path, 1)[-1]
    assert last_step == result.steps[1]
    model, spec, params, meta = load_model(last_path)
    assert meta["seed"] == 1 and meta["metrics"]["test_acc"] > 0.99 and meta["done"]
    assert _leaves_equal(params, T.unstack(result.params, 1))


def test_deterministic_and_independent_of_other_seeds():
    r1 = T.train_modular_addition(SHORT, seeds=(0, 1), progress=False)
    r2 = T.train_modular_addition(SHORT, seeds=(0, 1), progress=False)
    alone = T.train_modular_addition(SHORT, seeds=(1,), progress=False)
    assert _leaves_equal(r1.params, r2.params)  # bit-identical reruns
    # trained alone or next to another seed: the same up to float rounding (the
    # batched program may sum in another order on another CPU)
    for x, y in zip(jax.tree_util.tree_leaves(T.unstack(r1.params, 1)), jax.tree_util.tree_leaves(T.unstack(alone.params, 0))):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    assert not _leaves_equal(T.unstack(r1.params, 0), T.unstack(r1.params, 1))


def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch):
    full = T.train_modular_addition(SHORT, seeds=(0, 1), progress=False)
    calls = {"n": 0}
    original = T._full_batch_chunk

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed after 3 chunks (150 steps) were saved
        return original(*args, **kwargs)

    monkeypatch.setattr(T, "_full_batch_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        T.train_modular_addition(SHORT, seeds=(0, 1), ckpt_dir=tmp_path, progress=False)
    monkeypatch.setattr(T, "_full_batch_chunk", original)
    assert T.list_step_checkpoints(tmp_path, 0)[-1][0] == 150
    resumed = T.train_modular_addition(SHORT, seeds=(0, 1), ckpt_dir=tmp_path, progress=False)
    assert _leaves_equal(resumed.params, full.params)
    assert [h["step"] for h in resumed.history[0]] == list(range(50, 301, 50))
    assert resumed.history[0] == full.history[0]


def test_training_on_extends_and_other_config_is_refused(tmp_path):
    T.train_modular_addition(dataclasses.replace(SHORT, max_steps=100), seeds=(0,), ckpt_dir=tmp_path, progress=False)
    longer = T.train_modular_addition(SHORT, seeds=(0,), ckpt_dir=tmp_path, progress=False)
    direct = T.train_modular_addition(SHORT, seeds=(0,), progress=False)
    assert _leaves_equal(longer.params, direct.params)
    with pytest.raises(CheckpointError, match="seed_0/resume.ckpt.*'lr'"):
        T.train_modular_addition(dataclasses.replace(SHORT, lr=1e-2), seeds=(0,), ckpt_dir=tmp_path, progress=False)


def test_nan_loss_names_the_step():
    bad = dataclasses.replace(SHORT, lr=1e30, warmup_steps=1, weight_decay=0.0)
    with pytest.raises(T.TrainingDivergedError, match="seed 0: loss is nan at step \\d+"):
        T.train_modular_addition(bad, seeds=(0,), progress=False)


def test_mnist_training_per_epoch(tmp_path):
    data = synthetic_mnist()
    cfg = T.MNISTConfig(features=(32, 32), batch_size=100, epochs=3)
    result = T.train_mnist(data, cfg, seeds=(0, 1), ckpt_dir=tmp_path, progress=False)
    assert list(result.steps) == [18, 18]
    for hist in result.history:
        assert [h["step"] for h in hist] == [6, 12, 18]
        assert hist[-1]["train_loss"] < hist[0]["train_loss"]
        assert hist[-1]["test_acc"] > 0.5  # chance is 0.1
    assert [s for s, _ in T.list_step_checkpoints(tmp_path, 0)] == [6, 12, 18]
    model, spec, params, meta = load_model(T.list_step_checkpoints(tmp_path, 0)[-1][1])
    x = data.test.images[:16].reshape(16, -1).astype(np.float32) / 255
    validate_spec(spec, params, lambda p, x: model.apply({"params": p}, x), x)
    # two more epochs from the checkpoints equal five epochs in one go
    more = T.train_mnist(data, dataclasses.replace(cfg, epochs=5), seeds=(0, 1), ckpt_dir=tmp_path, progress=False)
    direct = T.train_mnist(data, dataclasses.replace(cfg, epochs=5), seeds=(0, 1), progress=False)
    assert _leaves_equal(more.params, direct.params)


def test_mnist_seeds_differ_and_bad_batch_size():
    data = synthetic_mnist(n_train=200, n_test=50)
    cfg = T.MNISTConfig(features=(8,), batch_size=50, epochs=1)
    r = T.train_mnist(data, cfg, seeds=(0, 1), progress=False)
    assert not _leaves_equal(T.unstack(r.params, 0), T.unstack(r.params, 1))
    with pytest.raises(ValueError, match="batch_size 500 exceeds the 200"):
        T.train_mnist(data, T.MNISTConfig(features=(8,), epochs=1), seeds=(0,), progress=False)


def test_init_params_start_from_given_weights():
    # Full-batch training is a function of the starting weights only, so starting
    # seed 0 from seed 3's initial weights reproduces seed 3's run.
    cfg = dataclasses.replace(SHORT, max_steps=100)
    init = T._init_states(cfg.model(), T._optimizer(cfg), jax.numpy.asarray([3]))
    spawned = T.train_modular_addition(cfg, seeds=(0,), progress=False, init_params=[T.unstack(init.params, 0)])
    seed3 = T.train_modular_addition(cfg, seeds=(3,), progress=False)
    seed0 = T.train_modular_addition(cfg, seeds=(0,), progress=False)
    assert _leaves_equal(spawned.params, seed3.params)
    assert not _leaves_equal(spawned.params, seed0.params)
    with pytest.raises(ValueError, match="init_params has 2 entries for 1 seeds"):
        T.train_modular_addition(cfg, seeds=(0,), progress=False, init_params=[T.unstack(init.params, 0)] * 2)
