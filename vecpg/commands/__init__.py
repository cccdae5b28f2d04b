"""Subcommands of the ``vecpg`` CLI, one module each (see :mod:`vecpg.commands.cli`)."""
