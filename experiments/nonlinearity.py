"""The nonlinearity experiment, as a script.

Same as `dl reproduce --only nonlinearity [--quick] [--seed S] [--out DIR]`:
python experiments/nonlinearity.py --quick --out runs/nonlinearity
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--only", "nonlinearity", *sys.argv[1:]]))
