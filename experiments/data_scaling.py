"""The data_scaling experiment, as a script.

Same as `dl reproduce --only data_scaling [--quick] [--seed S] [--out DIR]`:
python experiments/data_scaling.py --quick --out runs/data_scaling
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--only", "data_scaling", *sys.argv[1:]]))
