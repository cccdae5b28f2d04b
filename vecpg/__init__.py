"""vecpg: parallel-sampling policy-gradient training.

Importing ``vecpg`` is cheap and has no side effects: it does not import torch. The vector
env layer (:class:`SubprocVectorEnv`, :func:`make_vec`) needs only numpy and gymnasium, so
env factories that reference ``vecpg`` can be unpickled inside worker processes, which
never import torch. Everything else is imported lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# attribute -> module that defines it; resolved on first access (PEP 562).
_LAZY_ATTRIBUTES = {
    "SubprocVectorEnv": "vecpg.vector.env",
    "make_vec": "vecpg.vector.make",
    "WorkerError": "vecpg.errors",
    "WorkerTimeoutError": "vecpg.errors",
    "VecpgError": "vecpg.errors",
    "ConfigError": "vecpg.errors",
}

__all__ = ["__version__", *_LAZY_ATTRIBUTES]


def __getattr__(name: str) -> Any:
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'vecpg' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)


def __dir__() -> list[str]:
    return sorted(__all__)
