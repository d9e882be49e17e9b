"""``python -m relam.anticipation``: the same command line as ``relam anticipation``."""
from relam.anticipation.cli import main

raise SystemExit(main())
