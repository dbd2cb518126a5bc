"""The weight_sharing experiment, as a script.

Same as `dl reproduce --only weight_sharing [--quick] [--seed S] [--out DIR]`:
python experiments/weight_sharing.py --quick --out runs/weight_sharing
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--only", "weight_sharing", *sys.argv[1:]]))
