"""The self_supervised experiment, as a script.

Same as `dl reproduce --only self_supervised [--quick] [--seed S] [--out DIR]`:
python experiments/self_supervised.py --quick --out runs/self_supervised
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--only", "self_supervised", *sys.argv[1:]]))
