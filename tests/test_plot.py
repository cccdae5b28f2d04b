"""`vecpg plot`: PNG from synthetic metrics.csv files; clear errors for bad input."""

from __future__ import annotations

import csv
import importlib.util
import math

import pytest

from vecpg.commands.cli import main
from vecpg.errors import ConfigError
from vecpg.run.plot import plot_runs, read_curve

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="needs the plot extra (matplotlib)"
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir, rows, extra_columns=("sps", "policy_loss")):
    run_dir.mkdir(parents=True)
    columns = ["global_step", "update", "time_s", *extra_columns, "episode_return_mean"]
    with open(run_dir / "metrics.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, columns)
        writer.writeheader()
        for step, seconds, value in rows:
            writer.writerow(
                {
                    "global_step": step,
                    "update": step // 512,
                    "time_s": seconds,
                    "sps": 1000,
                    "policy_loss": 0.1,
                    "episode_return_mean": value,
                }
            )
    return run_dir


def synthetic(scale: float):
    rows = [(512 * (i + 1), 0.5 * (i + 1), scale * i) for i in range(40)]
    rows[0] = (512, 0.5, "")  # no finished episode yet
    rows[1] = (1024, 1.0, "nan")
    return rows


def png_size(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_cli_writes_png_with_runs_overlaid(tmp_path, capsys):
    first = write_run(tmp_path / "CartPole-v1__ppo__1", synthetic(5.0))
    second = write_run(tmp_path / "CartPole-v1__a2c__1", synthetic(3.0))
    out = tmp_path / "figures" / "returns.png"
    assert main(["plot", str(first), str(second), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    width, height = png_size(out)
    assert width > 1.5 * height  # two panels side by side


def test_single_panel(tmp_path):
    run = write_run(tmp_path / "run", synthetic(1.0))
    width, height = png_size(plot_runs([run], tmp_path / "steps.png", x="steps"))
    assert width < 1.6 * height


def plot_and_inspect(monkeypatch, runs, out, inspect):
    """``plot_runs(runs, out)``, calling ``inspect(figure)`` just before the figure is saved."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    original = pyplot.Figure.savefig

    def spy(figure, *args, **kwargs):
        inspect(figure)
        return original(figure, *args, **kwargs)

    monkeypatch.setattr(pyplot.Figure, "savefig", spy)
    return plot_runs(runs, out)


def test_labels_and_legend_text(tmp_path, monkeypatch):
    runs = [write_run(tmp_path / f"seed{i}" / "run", synthetic(1.0)) for i in (1, 2)]
    captured = {}

    def inspect(figure):
        captured["labels"] = [
            [text.get_text() for text in axis.get_legend().get_texts()] for axis in figure.axes
        ]

    plot_and_inspect(monkeypatch, runs, tmp_path / "out.png", inspect)
    assert captured["labels"] == [["seed1/run", "seed2/run"]] * 2


def test_read_curve_skips_missing_returns_and_stitches_resumed_time(tmp_path):
    rows = [(100, 1.0, 1.0), (200, 2.0, ""), (300, 3.0, 3.0), (400, 0.5, 4.0), (500, 1.5, 5.0)]
    curve = read_curve(write_run(tmp_path / "resumed", rows))
    assert curve.label == "resumed"
    assert curve.steps == [100, 300, 400, 500]
    assert curve.returns == [1.0, 3.0, 4.0, 5.0]
    assert curve.seconds == [1.0, 3.0, 3.5, 4.5]  # the second process's clock restarted
    assert all(math.isfinite(s) for s in curve.seconds)


def test_missing_dir_gives_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("vecpg: error: run directory") and "does not exist" in error
    with pytest.raises(ConfigError, match="does not exist"):
        plot_runs([tmp_path / "nope"], tmp_path / "x.png")


def test_dir_without_metrics_gives_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no metrics.csv"):
        plot_runs([tmp_path / "empty"], tmp_path / "x.png")


def test_missing_column_and_no_episodes(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.csv").write_text("global_step,sps\n1,2\n")
    with pytest.raises(ConfigError, match="lacks the column.*time_s, episode_return_mean"):
        plot_runs([bad], tmp_path / "x.png")
    young = write_run(tmp_path / "young", [(512, 0.5, ""), (1024, 1.0, "")])
    with pytest.raises(ConfigError, match="no finished episodes"):
        plot_runs([young], tmp_path / "x.png")


def test_bad_x_axis(tmp_path):
    with pytest.raises(ConfigError, match="--x must be one of"):
        plot_runs([tmp_path], tmp_path / "x.png", x="episodes")


@pytest.mark.parametrize("name", ["x.xyz", "returns.PNGX"])
def test_an_image_format_matplotlib_cannot_write_is_one_line(tmp_path, capsys, name):
    run = write_run(tmp_path / "run", [(512, 1.0, 20.0)])
    out = tmp_path / name
    assert main(["plot", str(run), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    suffix = out.suffix.lower()
    assert error.startswith(f"vecpg: error: --out {out}: matplotlib cannot write {suffix} files")
    assert ".png" in error and ".pdf" in error and ".svg" in error
    assert not out.exists()


def test_an_out_that_is_a_directory_is_one_line(tmp_path, capsys):
    run = write_run(tmp_path / "run", [(512, 1.0, 20.0)])
    assert main(["plot", str(run), "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error == (
        f"vecpg: error: --out {tmp_path} is a directory; give an image file name, e.g. "
        f"{tmp_path}/returns.png\n"
    )


def test_many_runs_get_one_legend_beside_the_panels(tmp_path, monkeypatch):
    runs = [write_run(tmp_path / f"seed{i}" / "run", synthetic(float(i))) for i in range(12)]
    captured = {}

    def inspect(figure):
        renderer = figure.canvas.get_renderer()
        captured["legends"] = [axis.get_legend() is not None for axis in figure.axes]
        legend = figure.axes[-1].get_legend()
        captured["legend_left"] = legend.get_window_extent(renderer).x0
        captured["axes_right"] = max(axis.get_window_extent(renderer).x1 for axis in figure.axes)
        captured["entries"] = len(legend.get_texts())

    out = plot_and_inspect(monkeypatch, runs, tmp_path / "out.png", inspect)
    assert captured["legends"] == [False, True]
    assert captured["entries"] == 12
    assert captured["legend_left"] > captured["axes_right"]  # it hides no curve
    # The saved image is widened to hold it rather than cutting it off.
    width, height = png_size(out)
    assert width > 2.0 * height
