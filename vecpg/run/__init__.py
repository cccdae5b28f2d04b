"""A training run: its config, the training loop, and what the loop writes and reports.

``config.py`` resolves a :class:`~vecpg.run.config.TrainConfig`; ``run_dir.py`` claims the
directory it writes to (one run per directory, locked while it trains); ``trainer.py`` runs it;
callbacks write metrics (``metrics.py``), checkpoints (``checkpoint.py``, resumed by
``resume.py``), health warnings (``health.py``), progress (``progress.py``) and TensorBoard
scalars (``tensorboard_log.py``); ``evaluate.py`` and ``plot.py`` read a finished run.
"""
