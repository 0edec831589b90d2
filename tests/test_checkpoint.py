import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rebasin_jax.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from rebasin_jax.models import model_config, model_name
from rebasin_jax.spec import flatten_params, validate_spec
from tests.conftest import tiny_mlp, tiny_modadd


def _meta(model):
    return {"model": model_name(model), "model_config": model_config(model), "seed": 3, "step": 7, "metrics": {"loss": 0.5}}


def test_round_trip_with_optimizer_state(tmp_path):
    model, params, _ = tiny_mlp()
    tx = optax.adam(1e-3)
    opt = tx.init(params)
    _, opt = tx.update(jax.tree_util.tree_map(jnp.ones_like, params), opt, params)
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, params, metadata=_meta(model), opt_state=opt)
    ckpt = load_checkpoint(path, template=params, opt_template=tx.init(params))
    assert ckpt.metadata["seed"] == 3 and ckpt.metadata["metrics"] == {"loss": 0.5}
    for x, y in zip(jax.tree_util.tree_leaves(ckpt.params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree_util.tree_leaves(ckpt.opt_state), jax.tree_util.tree_leaves(opt)):
        np.testing.assert_array_equal(x, y)
    assert int(ckpt.opt_state[0].count) == 1


def test_load_model_rebuilds_architecture(tmp_path):
    model, params, x = tiny_modadd(embed_mode="concat", use_bias=True)
    save_checkpoint(tmp_path / "m.ckpt", params, metadata=_meta(model))
    loaded_model, spec, loaded, meta = load_model(tmp_path / "m.ckpt")
    assert loaded_model == model
    np.testing.assert_allclose(loaded_model.apply({"params": loaded}, x), model.apply({"params": params}, x))
    validate_spec(spec, loaded, lambda p, x: loaded_model.apply({"params": p}, x), x)


def test_corruption_is_detected(tmp_path):
    model, params, _ = tiny_mlp()
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, params, metadata=_meta(model))
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF  # flip bits inside the payload
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="c.ckpt.*checksum"):
        load_checkpoint(path)
    path.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)
    path.write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="not a rebasin_jax checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_wrong_architecture_is_named(tmp_path):
    model, params, _ = tiny_mlp(features=(16, 12, 8))
    save_checkpoint(tmp_path / "w.ckpt", params, metadata=_meta(model))
    _, other, _ = tiny_mlp(features=(16, 10, 8))
    with pytest.raises(CheckpointError, match="'Dense_1/bias' has shape \\(12,\\) but the model expects \\(10,\\)"):
        load_checkpoint(tmp_path / "w.ckpt", template=other)
    _, deeper, _ = tiny_mlp(features=(16, 12, 8, 8))
    with pytest.raises(CheckpointError, match="missing.*Dense_4"):
        load_checkpoint(tmp_path / "w.ckpt", template=deeper)
    # metadata that claims another architecture than the params
    meta = _meta(model)
    meta["model_config"]["features"] = [16, 12, 9]
    save_checkpoint(tmp_path / "lie.ckpt", params, metadata=meta)
    with pytest.raises(CheckpointError, match="'Dense_2/bias' has shape \\(8,\\)"):
        load_model(tmp_path / "lie.ckpt")


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    model, params, _ = tiny_mlp()
    path = tmp_path / "x.ckpt"
    save_checkpoint(path, params, metadata=_meta(model))
    before = path.read_bytes()

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    bigger = jax.tree_util.tree_map(lambda v: v + 1, params)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, bigger, metadata=_meta(model))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["x.ckpt"]  # no temp file left behind
    np.testing.assert_array_equal(flatten_params(load_checkpoint(path).params)["Dense_0/bias"], params["Dense_0"]["bias"])
