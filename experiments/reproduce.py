"""Every experiment and the index report. Same as `dl reproduce [--quick] [--seed S] [--out DIR]`.

python experiments/reproduce.py --quick
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
