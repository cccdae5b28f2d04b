"""Training on Atari observations: uint8 all the way to the device, on the CPU and on CUDA.

The CUDA cases run only where torch sees a GPU (``benchmarks/gpu_check.sh`` runs them
first); the CPU cases check the same logic everywhere.
"""

from __future__ import annotations

import pytest
import torch

from vecpg.run.config import resolve_config
from vecpg.run.trainer import Trainer

pytest.importorskip("ale_py")

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("vector", ["sync", "native"])
def test_atari_ppo_keeps_uint8_observations_and_reports_its_time_split(tmp_path, device, vector):
    config = resolve_config(
        cli_values={
            "env": "ALE/Breakout-v5",
            "device": device,
            "vector": vector,
            "num_envs": 2,
            "num_steps": 8,
            "num_minibatches": 2,
            "num_epochs": 1,
            "total_steps": 32,
            "torch_threads": 1,
        }
    )
    rows = []

    class Rows:
        def on_update(self, trainer, row):
            rows.append(row)

    trainer = Trainer(config, tmp_path, callbacks=[Rows()])
    observations = trainer.buffer.observations
    assert observations.dtype == torch.uint8 and observations.device.type == device
    assert observations.shape == (8, 2, 4, 84, 84)
    summary = trainer.train()
    assert summary["global_step"] == 32 and len(rows) == 2
    for row in rows:
        assert row["sampling_time_s"] > 0 and row["update_time_s"] > 0
        assert ("gpu_memory_mib" in row) == (device == "cuda")
    assert next(trainer.policy.parameters()).device.type == device
