"""vecpg for Stable-Baselines3 users: ``from vecpg.sb3 import SubprocVecEnv``.

A drop-in for ``stable_baselines3.common.vec_env.SubprocVecEnv`` that steps the envs in
vecpg's shared-memory workers (see :mod:`vecpg.vector.sb3`). Needs the ``sb3`` extra
(``pip install 'vecpg[sb3]'``); importing this module without it raises ``ImportError``
saying so.
"""

from vecpg.vector.sb3 import SubprocVecEnv

__all__ = ["SubprocVecEnv"]
