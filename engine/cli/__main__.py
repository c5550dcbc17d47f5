"""``python -m engine.cli``: the ``jetloom`` command."""

import sys

from engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
