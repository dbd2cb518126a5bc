"""The depth experiment, as a script.

Same as `dl reproduce --only depth [--quick] [--seed S] [--out DIR]`:
python experiments/depth.py --quick --out runs/depth
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--only", "depth", *sys.argv[1:]]))
