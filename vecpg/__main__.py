"""``python -m vecpg`` is the same as the ``vecpg`` command."""

from vecpg.commands.cli import console_main

console_main()
