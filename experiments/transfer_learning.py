"""The transfer_learning experiment, as a script.

Same as `dl reproduce --only transfer_learning [--quick] [--seed S] [--out DIR]`:
python experiments/transfer_learning.py --quick --out runs/transfer_learning
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--only", "transfer_learning", *sys.argv[1:]]))
