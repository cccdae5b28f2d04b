"""The parent side of vecpg's vector-env layer: numpy, gymnasium and ``workers`` only, no torch.

:class:`SubprocVectorEnv` (``env.py``) is the Gymnasium ``VectorEnv``; it starts and talks to
its processes through :class:`~vecpg.vector.worker_pool.WorkerPool`, hands out image batches
from spare shared memory (``observation_slots.py``), checks actions, seeds and reset masks
before they are sent (``input_checks.py``), merges the workers' infos as Gymnasium does
(``infos.py``), keeps the books of EnvPool-style ``send``/``recv`` (``in_flight.py``) and
picks its default layout from the cores and the step cost that a probe worker measured
(``worker_defaults.py``). The worker side lives in the top-level ``workers`` package.
"""

from vecpg.vector.env import AsyncBatch, SubprocVectorEnv
from vecpg.vector.make import make_vec

__all__ = ["AsyncBatch", "SubprocVectorEnv", "make_vec"]
