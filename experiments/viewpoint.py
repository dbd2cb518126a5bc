"""The viewpoint experiment, as a script.

Same as `dl reproduce --only viewpoint [--quick] [--seed S] [--out DIR]`:
python experiments/viewpoint.py --quick --out runs/viewpoint
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--only", "viewpoint", *sys.argv[1:]]))
