"""The Ray backend (vecpg.distributed) against the single-machine Sampler and Trainer.

Local tests share one Ray instance (2 CPUs) per test class; the multi-node test runs after
it on a two-node ``ray.cluster_utils.Cluster``. Only one Ray instance is alive at a time.
Ray's plasma store is put in /tmp (``_plasma_directory``) so /dev/shm stays empty, and the
teardown checks that nothing is left in /dev/shm and that every Ray process has exited.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import gymnasium as gym
import psutil
import pytest
import torch

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'vecpg[ray]')")

from vecpg.buffer import RolloutBuffer  # noqa: E402
from vecpg.distributed import RaySampler  # noqa: E402
from vecpg.errors import ConfigError, VecpgError, WorkerError  # noqa: E402
from vecpg.policies import ActorCritic  # noqa: E402
from vecpg.run.config import resolve_config  # noqa: E402
from vecpg.run.env_factory import env_spaces, make_vector_env  # noqa: E402
from vecpg.run.metrics import WALL_CLOCK_COLUMNS  # noqa: E402
from vecpg.run.trainer import Trainer  # noqa: E402
from vecpg.sampler import Sampler  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.allow_children]

SESSION_HELPERS = ("forkserver", "resource_tracker", "semaphore_tracker")
BUFFER_FIELDS = (
    "observations",
    "actions",
    "log_probs",
    "values",
    "rewards",
    "terminations",
    "truncations",
    "final_values",
    "next_values",
)


def _ray_processes() -> list[psutil.Process]:
    """Live descendants, without multiprocessing's session helpers (as tests/conftest.py)."""
    processes = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if any(helper in " ".join(child.cmdline()) for helper in SESSION_HELPERS):
                continue
        except psutil.Error:
            continue
        processes.append(child)
    return processes


def _wait_gone(pids, timeout_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [pid for pid in pids if psutil.pid_exists(pid) and not _is_zombie(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _start_ray(tmp_root: Path, **kwargs) -> None:
    ray.init(
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(tmp_root),
        _plasma_directory="/tmp",
        object_store_memory=200 * 1024 * 1024,
        **kwargs,
    )


def _shutdown_ray_and_check(shm_before: set[str]) -> None:
    ray.shutdown()
    leftover = _wait_gone([process.pid for process in _ray_processes()])
    assert not leftover, f"Ray left processes running: {leftover}"
    assert set(os.listdir("/dev/shm")) <= shm_before, "Ray left entries in /dev/shm"


@pytest.fixture(scope="class")
def local_ray(tmp_path_factory):
    if ray.is_initialized():
        ray.shutdown()
    shm_before = set(os.listdir("/dev/shm"))
    # Actor processes import ExitOnceEnv from this module by name ("test_distributed:...").
    tests_dir = str(Path(__file__).parent)
    runtime_env = {"env_vars": {"PYTHONPATH": tests_dir}}
    _start_ray(tmp_path_factory.mktemp("ray"), num_cpus=2, runtime_env=runtime_env)
    yield
    _shutdown_ray_and_check(shm_before)


def _config(**overrides):
    values = {
        "env": "CartPole-v1",
        "preset": "none",  # the tiny rollout below, whatever the env's preset says
        "seed": 5,
        "num_envs": 4,
        "num_steps": 8,
        "num_workers": 1,
        "backend": "ray",
        "num_samplers": 2,
        "sampler_cpus": 1,
        "total_steps": 3 * 4 * 8,
        **overrides,
    }
    return resolve_config(cli_values=values)


def _policy_and_buffer(config):
    torch.manual_seed(config.seed)
    observation_space, action_space = env_spaces(config.env)
    policy = ActorCritic(observation_space, action_space)
    buffer = RolloutBuffer(
        observation_space,
        action_space,
        config.num_steps,
        config.num_envs,
    )
    return policy, buffer


def _assert_same(expected, actual, name: str) -> None:
    """Exact for integer fields (discrete actions, flags); float32 rounding for float ones.

    The same envs and per-env noise give the same trajectories, but the MLP evaluated on an
    [n]-row batch (one actor) and on an [N]-row batch (one machine) can round differently
    in the last bits, because the GEMM kernels block by batch size; values and log_probs
    then agree to ~1e-7 relative, not bitwise. With continuous actions that rounding reaches
    the env through the actions, so observations and rewards agree to float32 rounding too.
    """
    if expected.dtype.is_floating_point:
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)
    else:
        assert torch.equal(actual, expected), name


# A fixed path: the actor process that builds the env cannot see the test's tmp_path.
EXIT_MARKER = Path("/tmp") / f"vecpg-test-exit-once-{os.getuid()}"


class ExitOnceEnv(gym.Env):
    """CartPole that kills the process it runs in at its 5th step, once per marker file."""

    def __init__(self) -> None:
        self.env = gym.make("CartPole-v1")
        self.observation_space, self.action_space = (
            self.env.observation_space,
            self.env.action_space,
        )
        self.marker = EXIT_MARKER
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        if self.steps == 5 and not self.marker.exists():
            self.marker.touch()
            os._exit(1)  # the Ray actor process dies mid-collect (sync vector env)
        return self.env.step(action)


@pytest.mark.usefixtures("local_ray")
class TestLocalRay:
    @pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
    def test_collect_matches_single_machine_sampler(self, env_id):
        config = _config(env=env_id)
        local_env = make_vector_env(
            resolve_config(cli_values={**config.to_dict(), "backend": "local"})
        )
        policy, local_buffer = _policy_and_buffer(config)
        local = Sampler(local_env, policy, local_buffer)
        distributed = RaySampler(config)
        ray_buffer = _policy_and_buffer(config)[1]
        try:
            distributed.start(policy, ray_buffer)
            local.reset(seed=11)
            distributed.reset(seed=11)
            for _ in range(3):
                local.collect()
                distributed.collect()
                for name in BUFFER_FIELDS:
                    _assert_same(getattr(local_buffer, name), getattr(ray_buffer, name), name)
            assert distributed.global_step == local.global_step == 3 * 8 * 4
            assert distributed.episodes.state_dict() == local.episodes.state_dict()
            assert set(distributed.timings) >= {"broadcast_s", "sample_s", "gather_s"}
        finally:
            distributed.close()
            local_env.close()

    def test_training_updates_match_local_backend(self, tmp_path):
        rows = {}
        for backend in ("local", "ray"):

            class Record:
                def on_update(self, trainer, row, backend=backend):
                    rows.setdefault(backend, []).append(row)

            config = _config(backend=backend, run_dir=str(tmp_path / backend))
            summary = Trainer(config, callbacks=[Record()]).train()
            assert summary["updates"] == 3
        assert len(rows["local"]) == len(rows["ray"]) == 3
        for local_row, ray_row in zip(rows["local"], rows["ray"], strict=True):
            for key, value in local_row.items():
                if key in WALL_CLOCK_COLUMNS:
                    continue
                # Integer counters exactly; float metrics to float32 rounding (see _assert_same).
                assert ray_row[key] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), key

    def test_normalization_with_one_sampler_matches_local_backend(self, tmp_path):
        """One sampler normalizes each step with the same statistics as one machine does;
        the learner's statistics after the merge cover the same samples."""
        rows, trainers = {}, {}
        for backend in ("local", "ray"):

            class Record:
                def on_update(self, trainer, row, backend=backend):
                    rows.setdefault(backend, []).append(row)

            config = _config(
                env="Pendulum-v1",
                backend=backend,
                num_samplers=1,
                normalize_observations=True,
                normalize_rewards=True,
                run_dir=str(tmp_path / backend),
            )
            trainers[backend] = Trainer(config, callbacks=[Record()])
            assert trainers[backend].train()["updates"] == 3
        for local_row, ray_row in zip(rows["local"], rows["ray"], strict=True):
            for key, value in local_row.items():
                if key not in WALL_CLOCK_COLUMNS:
                    assert ray_row[key] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), (
                        key
                    )
        local_state = trainers["local"].state_dict()
        ray_state = trainers["ray"].state_dict()
        for name in ("observation_normalizer", "reward_scaler"):
            _assert_nested_close(ray_state[name], local_state[name])

    def test_normalization_statistics_cover_every_sampler(self, tmp_path):
        config = _config(
            env="Pendulum-v1",
            normalize_observations=True,
            normalize_rewards=True,
            run_dir=str(tmp_path),
        )
        trainer = Trainer(config)
        trainer.train()
        stats = trainer.observation_normalizer.stats[""]
        steps = 3 * config.num_steps * config.num_envs
        assert stats.count == pytest.approx(1e-4 + steps)  # every env's every observation
        assert trainer.reward_scaler.stats.count == pytest.approx(1e-4 + steps)
        # Pendulum observations are (cos, sin, angular velocity): cos/sin within [-1, 1]
        assert stats.mean[:2].abs().max() <= 1.0 and (stats.var > 0).all()
        assert trainer.reward_scaler.returns.shape == (config.num_envs,)
        assert (trainer.reward_scaler.returns != 0).all()  # each sampler's returns came back

    def test_env_exception_reaches_learner_as_worker_error(self, tmp_path):
        config = _config(env="tests.fixture_envs:FailingEnv", run_dir=str(tmp_path))
        trainer = Trainer(config)
        with pytest.raises(WorkerError) as caught:
            trainer.train()
        error = caught.value
        assert type(error) is WorkerError
        assert error.exception_type == "InjectedFault"
        assert error.env_index in range(4)
        assert "InjectedFault" in error.remote_traceback
        assert f"env {error.env_index} " in str(error) and "Ray sampler" in str(error)
        assert trainer.sampler.closed and not trainer.sampler.actors

    def test_killed_actor_is_restarted_and_update_completes(self, caplog):
        config = _config()
        distributed = RaySampler(config)
        policy, buffer = _policy_and_buffer(config)
        try:
            distributed.start(policy, buffer)
            distributed.reset(seed=1)
            distributed.collect()
            old_pid = distributed.describe()[0]["pid"]
            ray.kill(distributed.actors[0], no_restart=False)
            assert not _wait_gone([old_pid]), "ray.kill did not end the actor"
            distributed.collect()  # waits for Ray's restart, the fresh actor resets itself
            assert distributed.describe()[0]["pid"] != old_pid
            assert distributed.global_step == 2 * 8 * 4
            assert not buffer.values[:, :2].eq(0).all()
        finally:
            distributed.close()

    def test_actor_dying_mid_collect_is_recollected(self, caplog):
        marker = EXIT_MARKER
        marker.unlink(missing_ok=True)
        config = _config(env="test_distributed:ExitOnceEnv", vector="sync", num_samplers=1)
        distributed = RaySampler(config)
        policy, buffer = _policy_and_buffer(config)
        try:
            distributed.start(policy, buffer)
            distributed.reset(seed=1)
            with caplog.at_level(logging.WARNING, logger="vecpg.distributed"):
                distributed.collect()
            assert marker.exists() and distributed.restarts == 1
            assert "re-collecting its segment" in caplog.text
            assert distributed.global_step == 8 * 4
        finally:
            distributed.close()
            marker.unlink(missing_ok=True)

    def test_close_leaves_no_actors_or_env_workers(self):
        config = _config()
        distributed = RaySampler(config)
        policy, buffer = _policy_and_buffer(config)
        distributed.start(policy, buffer)
        placement_group = distributed.placement_group
        where = distributed.describe()
        pids = [info["pid"] for info in where] + [
            pid for info in where for pid in info["worker_pids"]
        ]
        assert all(info["worker_pids"] for info in where)  # each actor runs its own workers
        distributed.close()
        distributed.close()  # idempotent
        assert not _wait_gone(pids), "actor or env worker processes still running"
        table = ray.util.placement_group_table(placement_group)
        assert table["state"] == "REMOVED"

    def test_config_errors(self):
        with pytest.raises(ConfigError, match="divisible by num_samplers"):
            _config(num_envs=5)
        with pytest.raises(VecpgError, match="could not place"):
            config = _config(sampler_cpus=2)
            distributed = RaySampler(config)
            policy, buffer = _policy_and_buffer(config)
            import vecpg.distributed

            vecpg.distributed.PLACEMENT_TIMEOUT_S = 1.0
            try:
                distributed.start(policy, buffer)
            finally:
                vecpg.distributed.PLACEMENT_TIMEOUT_S = 60.0
                distributed.close()


def test_samplers_spread_over_two_nodes(tmp_path):
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    shm_before = set(os.listdir("/dev/shm"))
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            "object_store_memory": 100 * 1024 * 1024,
        },
    )
    try:
        cluster.add_node(num_cpus=1, object_store_memory=100 * 1024 * 1024)
        ray.init(address=cluster.address, log_to_driver=False)
        config = _config()
        distributed = RaySampler(config)
        policy, buffer = _policy_and_buffer(config)
        try:
            distributed.start(policy, buffer)
            nodes = {info["node_id"] for info in distributed.describe()}
            assert len(nodes) == 2, "SPREAD placement should use both nodes"
            distributed.reset(seed=3)
            distributed.collect()
            assert distributed.global_step == 8 * 4
        finally:
            distributed.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert not _wait_gone([process.pid for process in _ray_processes()])
    assert set(os.listdir("/dev/shm")) <= shm_before


def test_weights_sent_to_the_samplers_are_as_small_as_the_policy():
    """Parameters that are views of one shared storage must not each carry the whole
    storage when pickled (11x the policy for CartPole's 10 tensors)."""
    import pickle

    from vecpg.distributed import _cpu_copy, _cpu_weights

    policy = ActorCritic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2))
    parameters = list(policy.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in parameters])
    offset = 0
    for parameter in parameters:  # every parameter a view of one flat vector
        parameter.data = flat[offset : offset + parameter.numel()].view_as(parameter)
        offset += parameter.numel()
    parameter_bytes = sum(p.numel() * p.element_size() for p in policy.parameters())
    assert len(pickle.dumps(_cpu_weights(policy))) < 1.5 * parameter_bytes
    copy = _cpu_copy(policy)
    assert len(pickle.dumps(copy)) < 1.5 * parameter_bytes + 20_000  # + the module's pickle
    for name, tensor in copy.state_dict().items():
        assert torch.equal(tensor, policy.state_dict()[name])


def _assert_nested_close(actual, expected):
    """Nested dicts of tensors and floats, equal to float64 rounding."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected)
        for key in expected:
            _assert_nested_close(actual[key], expected[key])
    elif isinstance(expected, torch.Tensor):
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-8)
    else:
        assert actual == pytest.approx(expected, rel=1e-9)
