"""The sampling benchmark behind ``vecpg bench``, its synthetic workloads (``envs.py``) and
what every benchmark records it was measured with (``provenance.py``)."""
