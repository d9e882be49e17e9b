"""``python -m relam``: the ``relam`` command line (:func:`relam.cli.main`)."""
import sys

from relam.cli import main

if __name__ == "__main__":
    sys.exit(main())
