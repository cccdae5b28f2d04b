"""``python -m vecpg`` is the same as the ``vecpg`` command."""

from vecpg.commands.cli import main

raise SystemExit(main())
