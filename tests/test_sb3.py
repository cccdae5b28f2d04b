"""vecpg.sb3.SubprocVecEnv against Stable-Baselines3's own SubprocVecEnv as the oracle.

Same env functions, seeds, options and actions into both; every observation, reward, done,
info dict (terminal observations and ``TimeLimit.truncated`` included) and reset info must
be equal, also under SB3's VecEnv wrappers. The envs live in tests/sb3_fixture_envs.py:
this module imports SB3 (and so torch), which workers must not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from tests.fresh_python import run_python
from tests.sb3_fixture_envs import (
    FailingStepEnv,
    SpacesEnv,
    TorchProbeEnv,
    maybe_wrapped,
    short_cartpole,
)

pytest.importorskip("stable_baselines3")

from stable_baselines3.common.vec_env import SubprocVecEnv as SB3SubprocVecEnv  # noqa: E402
from stable_baselines3.common.vec_env import (  # noqa: E402
    VecFrameStack,
    VecMonitor,
    VecNormalize,
    VecVideoRecorder,
)

from vecpg.errors import WorkerError  # noqa: E402
from vecpg.sb3 import SubprocVecEnv  # noqa: E402


def assert_same(ours, theirs, where="value", skip=frozenset()):
    """Exact equality of nested dicts/lists/tuples/arrays/scalars, types and dtypes included.

    Dict keys in ``skip`` are compared by presence only (e.g. wall-clock times).
    """
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs), (
            f"{where}: {ours!r} != {theirs!r}"
        )
        for key in set(theirs) - skip:
            assert_same(ours[key], theirs[key], f"{where}[{key!r}]", skip)
    elif isinstance(theirs, list | tuple):
        assert isinstance(ours, list | tuple) and len(ours) == len(theirs), where
        for index, (left, right) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(left, right, f"{where}[{index}]", skip)
    elif isinstance(theirs, np.ndarray):
        assert isinstance(ours, np.ndarray) and ours.dtype == theirs.dtype, (
            f"{where}: {ours!r} != {theirs!r}"
        )
        np.testing.assert_array_equal(ours, theirs, err_msg=where)
    else:
        assert type(ours) is type(theirs) and ours == theirs, f"{where}: {ours!r} != {theirs!r}"


def compare_runs(make_pair, env_fns, steps, seed=7, wrap=lambda venv: venv, skip=frozenset()):
    """Step ours and SB3's vec env side by side; every result must be the same."""
    ours, theirs = wrap(make_pair[0](env_fns)), wrap(make_pair[1](env_fns))
    try:
        num_envs = len(env_fns)
        rng = np.random.default_rng(seed)
        dones_seen = 0
        for venv in (ours, theirs):
            venv.seed(seed)
            venv.set_options([{"round": 0, "env": i} for i in range(num_envs)])
        assert_same(ours.reset(), theirs.reset(), "reset")
        assert_same(ours.reset_infos, list(theirs.reset_infos), "reset_infos")
        for t in range(steps):
            actions = rng.integers(0, ours.action_space.n, num_envs)
            result, expected = ours.step(actions), theirs.step(actions)
            assert_same(result, expected, f"step {t}", skip)
            assert_same(ours.reset_infos, list(theirs.reset_infos), f"reset_infos {t}")
            dones_seen += int(expected[2].sum())
            if t == steps // 2:  # a second reset: new seeds, options for all envs
                for venv in (ours, theirs):
                    venv.seed(seed + 100)
                    venv.set_options({"round": 1})
                assert_same(ours.reset(), theirs.reset(), "second reset")
                assert_same(ours.reset_infos, list(theirs.reset_infos), "second reset_infos")
        assert dones_seen > 0, "the run must cross episode ends"
    finally:
        ours.close()
        theirs.close()


# SB3's workers import SB3, so torch: forked from this process, which has imported it, they
# start in a fraction of a second instead of several.
sb3_oracle = partial(SB3SubprocVecEnv, start_method="fork")
PAIR = (SubprocVecEnv, sb3_oracle)


@pytest.mark.parametrize("kind", ["box", "dict", "tuple", "image"])
def test_matches_sb3_on_every_observation_kind(kind):
    compare_runs(PAIR, [partial(SpacesEnv, kind)] * 3, steps=24)


@pytest.mark.parametrize(
    "options", [{"num_workers": 1}, {"num_workers": 2, "parent_share": False}, {}]
)
def test_matches_sb3_on_cartpole_with_every_layout(options):
    pair = (partial(SubprocVecEnv, **options), sb3_oracle)
    compare_runs(pair, [short_cartpole] * 4, steps=30)


def test_step_infos_are_the_envs_own_dicts():
    """Infos keep Python types (Gymnasium's merge would turn them into numpy scalars)."""
    with_infos = SubprocVecEnv([SpacesEnv] * 2, num_workers=1)
    try:
        with_infos.seed(0)
        with_infos.reset()
        _, _, _, infos = with_infos.step(np.array([1, 1]))
        assert type(infos[0]["t"]) is int and type(infos[0]["half"]) is float
        assert infos[0]["nested"] == {"a": 1} and infos[0]["TimeLimit.truncated"] is False
    finally:
        with_infos.close()


@pytest.mark.parametrize(
    "wrapper",
    [VecNormalize, partial(VecFrameStack, n_stack=3), VecMonitor],
    ids=["VecNormalize", "VecFrameStack", "VecMonitor"],
)
def test_matches_sb3_under_its_wrappers(wrapper):
    # VecMonitor's episode["t"] is wall-clock time.
    compare_runs(PAIR, [short_cartpole] * 3, steps=30, wrap=wrapper, skip=frozenset({"t"}))


def test_matches_sb3_under_frame_stack_of_images():
    wrap = partial(VecFrameStack, n_stack=2)
    compare_runs(PAIR, [partial(SpacesEnv, "image")] * 2, steps=12, wrap=wrap)


def test_video_recorder_records_the_same_frames(tmp_path):
    pytest.importorskip("moviepy")
    frames = {}
    for name, vec_class in (("ours", SubprocVecEnv), ("sb3", sb3_oracle)):
        venv = vec_class([partial(SpacesEnv, render_mode="rgb_array")] * 2)
        recorder = VecVideoRecorder(
            venv, str(tmp_path / name), record_video_trigger=lambda step: step == 0, video_length=4
        )
        try:
            recorder.seed(3)
            recorder.reset()
            frames[name] = [recorder.render()]
            for _ in range(5):
                recorder.step(np.array([1, 2]))
                frames[name].append(recorder.render())
        finally:
            recorder.close()
        assert len(list((tmp_path / name).glob("*.mp4"))) == 1
    assert_same(frames["ours"], frames["sb3"], "frames")


def test_attribute_and_method_calls_match_sb3():
    env_fns = [partial(maybe_wrapped, i) for i in range(4)]
    wrapper = gym.wrappers.RecordEpisodeStatistics
    ours, theirs = SubprocVecEnv(env_fns, num_workers=2), sb3_oracle(env_fns)
    try:
        for venv in (ours, theirs):
            venv.seed(1)
            venv.reset()
            venv.step(np.array([1, 1, 2, 2]))
            venv.set_attr("note", "all")
            venv.set_attr("note", "some", indices=[1, -1])
            venv.env_method("set_wrapper_attr", "t", 40, indices=2)
        for index in (None, 2, [3, 0], [-1], range(1, 3)):
            for name in ("t", "note", "kind", "limit"):
                assert_same(ours.get_attr(name, index), theirs.get_attr(name, index), name)
            assert_same(
                ours.env_method("scaled", 2, indices=index, offset=1),
                theirs.env_method("scaled", 2, indices=index, offset=1),
                f"env_method {index}",
            )
            assert_same(ours.env_is_wrapped(wrapper, index), theirs.env_is_wrapped(wrapper, index))
        assert ours.env_is_wrapped(wrapper) == [False, True, False, True]
        assert ours.env_is_wrapped(VecFrameStack) == [False] * 4
        assert ours.has_attr("note") and theirs.has_attr("note")
        assert not ours.has_attr("missing") and not theirs.has_attr("missing")
        assert ours.get_attr("render_mode") == [None] * 4
    finally:
        ours.close()
        theirs.close()


def test_missing_attribute_raises_and_the_env_goes_on():
    venv = SubprocVecEnv([SpacesEnv] * 2, num_workers=1)
    try:
        with pytest.raises(AttributeError, match="missing"):
            venv.get_attr("missing")
        venv.reset()
        assert venv.step(np.array([1, 1]))[0].shape == (2, 3)
    finally:
        venv.close()


def test_env_failure_raises_worker_error_and_releases_everything():
    venv = SubprocVecEnv([FailingStepEnv] * 2, num_workers=2, parent_share=False)
    venv.reset()
    with pytest.raises(WorkerError, match="step failed on purpose"):
        venv.step(np.array([1, 1]))
    assert venv.vector_env.closed
    venv.close()


def test_actions_as_a_list_of_per_env_actions():
    venv = SubprocVecEnv([partial(SpacesEnv, "box")] * 3, num_workers=1)
    reference = SubprocVecEnv([partial(SpacesEnv, "box")] * 3, num_workers=1)
    try:
        for env in (venv, reference):
            env.seed(0)
            env.reset()
        assert_same(venv.step([0, 2, 1]), reference.step(np.array([0, 2, 1])))
    finally:
        venv.close()
        reference.close()


def test_start_method_and_options_are_checked():
    with pytest.raises(ValueError, match="cannot find context for 'illegal'"):
        SubprocVecEnv([SpacesEnv], start_method="illegal")
    with pytest.raises(TypeError, match="autoreset_mode"):
        SubprocVecEnv([SpacesEnv], autoreset_mode="NextStep")


def test_workers_of_plain_gymnasium_envs_do_not_import_sb3_or_torch():
    venv = SubprocVecEnv([TorchProbeEnv] * 2, num_workers=2, parent_share=False)
    try:
        np.testing.assert_array_equal(venv.reset(), [0, 0])
        np.testing.assert_array_equal(venv.step(np.array([0, 1]))[0], [0, 0])
    finally:
        venv.close()


def test_import_without_sb3_names_the_extra():
    result = run_python(
        "import sys; sys.modules['stable_baselines3'] = None\n"
        "try:\n    import vecpg.sb3\nexcept ImportError as error:\n    print(error)\n"
    )
    assert "pip install 'vecpg[sb3]'" in result.stdout, result.stderr


README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_example() -> str:
    """The README's SB3 example, as a user would save and run it."""
    text = README.read_text()
    return text.split("<!-- test:sb3-example -->\n```python\n")[1].split("```")[0]


def test_the_readme_example_changes_only_the_import():
    example = _readme_example()
    assert "from vecpg.sb3 import SubprocVecEnv" in example
    assert "from stable_baselines3.common.vec_env import SubprocVecEnv" not in example


@pytest.mark.timeout(300)
def test_the_readme_ppo_example_trains_through_vecpg(tmp_path):
    script = tmp_path / "sb3_ppo.py"
    script.write_text(_readme_example())
    environment = {**os.environ, "PYTHONPATH": str(README.parent)}
    result = subprocess.run(
        [sys.executable, str(script), "256"],  # one rollout of 8 x 32 steps, one update
        capture_output=True,
        text=True,
        timeout=240,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"mean return [0-9.]+ \+- [0-9.]+ after 256 steps", result.stdout)
