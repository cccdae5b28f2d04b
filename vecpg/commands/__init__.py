"""Subcommands of the ``vecpg`` CLI, one module each (see :mod:`vecpg.commands.cli`);
``messages.py`` is how they print warnings."""
