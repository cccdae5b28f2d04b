"""The sampling benchmark behind ``vecpg bench`` and its synthetic workloads (``envs.py``)."""
