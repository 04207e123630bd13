"""The idgen demo: `python app.py` (same as `idgen demo`; see `idgen demo --help`)."""

import sys

from idgen.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
