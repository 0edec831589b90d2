
from rebasin_jax.plotting import TEST_COLOR, TRAIN_COLOR, Line, Panel, history_panels, interpolation_panel, plot, summary_panels


def _curves():
    lam = [0.0, 0.5, 1.0]
    c = lambda v: {"train_loss": v, "test_loss": v, "train_acc": v, "test_acc": v}
    return lam, {"naive": c([1, 3, 1]), "weight/all": c([1, 1.2, 1])}


def test_interpolation_panel_style():
    lam, curves = _curves()
    panel = interpolation_panel(curves, lam, "weight/all", "loss", "Weight matching (all)")
    styles = {(l.label, l.style, l.color) for l in panel.lines}
    assert styles == {("Train, naive", "--", TRAIN_COLOR), ("Train, permuted", "-", TRAIN_COLOR),
                      ("Test, naive", "--", TEST_COLOR), ("Test, permuted", "-", TEST_COLOR)}
    assert panel.xticks == ([0.0, 1.0], ["Model A", "Model B"])
    permuted = [l for l in panel.lines if l.label == "Test, permuted"][0]
    assert list(permuted.y) == [1, 1.2, 1]


def test_plot_writes_png(tmp_path):
    lam, curves = _curves()
    hist = {"A": [{"step": s, "train_acc": 1, "test_acc": s / 10, "train_loss": 1 / s, "test_loss": 2 / s} for s in (1, 10, 100)]}
    panels = summary_panels(curves, lam) + history_panels(hist) + [Panel([Line([1, 2], [3, 4], style="", marker="o")])]
    path = plot(tmp_path / "sub" / "fig.png", panels, ncols=2, title="t")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert len(summary_panels(curves, lam)[0].lines) == 2
