"""benchmarks/atari_curve.py: scores read at step counts, and random play's game score."""

from __future__ import annotations

import pytest

from tests.benchmark_scripts import load_benchmark

curve = load_benchmark("atari_curve")


def rows(*points):
    return [
        {"global_step": step, "time_s": step / 100, "episode_return_mean": score}
        for step, score in points
    ]


def test_the_score_at_a_step_is_the_first_row_at_or_after_it():
    metrics = rows((1_024, 1.0), (250_880, 4.5), (500_736, 9.0), (999_424, 12.0))
    assert curve.score_at(metrics, 250_000)["episode_return_mean"] == 4.5
    assert curve.score_at(metrics, 500_736)["episode_return_mean"] == 9.0
    assert curve.score_at(metrics, 1_000_000) is None  # stopped short: no score claimed
    result = curve.report("ALE/Breakout-v5", 1_000_000, metrics, [1.0, 2.0])
    assert [point["score"] for point in result["points"]] == [4.5, 9.0, None]
    assert result["random_mean"] == 1.5 and result["random_games"] == 2


def test_random_play_gives_one_seeded_score_per_game():
    pytest.importorskip("ale_py")
    scores = curve.random_scores("ALE/Breakout-v5", games=2, seed=0)
    assert len(scores) == 2
    assert all(score >= 0 and float(score).is_integer() for score in scores)  # Breakout points
    assert curve.random_scores("ALE/Breakout-v5", games=2, seed=0) == scores
