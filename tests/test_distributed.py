"""Training with the seed axis sharded over 4 simulated CPU devices equals 1 device.

Equal up to float rounding, not bit for bit: the partitioned program sums in a
different order than the single-device one (a few 1e-7 after 100 steps here).
Training dynamics amplify such differences over longer runs, so the check uses
a short run.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rebasin_jax.distributed import padded_seeds, seed_mesh

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from rebasin_jax import train as T
    cfg = T.ModularAdditionConfig(p=23, d=16, hidden=(32, 16), max_steps=100, log_every=50, stop_test_loss=0.5)
    out = {"devices": jax.device_count()}
    for name, devices in (("one", jax.devices()[:1]), ("all", None)):
        r = T.train_modular_addition(cfg, seeds=(0, 1, 2), ckpt_dir=sys.argv[1] + "/" + name, progress=False,
                                     devices=devices)
        out[name] = [np.asarray(x).tolist() for x in jax.tree_util.tree_leaves(r.params)]
        out[name + "_steps"] = [int(s) for s in r.steps]
        out[name + "_history"] = r.history
    print(json.dumps(out))
""")


def test_four_simulated_devices_equal_one(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert len(out["one"]) == len(out["all"])
    for a, b in zip(out["one"], out["all"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    assert out["one_steps"] == out["all_steps"] == [100, 100, 100]
    for h1, h4 in zip(out["one_history"], out["all_history"]):
        assert [r["step"] for r in h1] == [r["step"] for r in h4] == [50, 100]
        for r1, r4 in zip(h1, h4):
            assert r1["test_loss"] == pytest.approx(r4["test_loss"], rel=1e-5)
    # the padding seed (a copy of seed 2) left no checkpoint behind
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["seed_0", "seed_1", "seed_2"]


def test_padding_and_single_device():
    import jax

    assert seed_mesh(jax.devices()[:1]) is None
    assert padded_seeds((0, 1, 2), None) == (0, 1, 2)
    with pytest.raises(ValueError):
        seed_mesh([])
