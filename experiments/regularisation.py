"""The regularisation experiment, as a script.

Same as `dl reproduce --only regularisation [--quick] [--seed S] [--out DIR]`:
python experiments/regularisation.py --quick --out runs/regularisation
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--only", "regularisation", *sys.argv[1:]]))
