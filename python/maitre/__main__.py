"""``python -m maitre``: the same as ``maitre-serve``."""

import sys

from maitre.runner import run

if __name__ == "__main__":
    sys.exit(run(["python -m maitre"] + sys.argv[1:]))
