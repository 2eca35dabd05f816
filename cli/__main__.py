"""``python -m flowtui``: the same as the ``flowtui`` command."""
from flowtui.cli import main

raise SystemExit(main())
