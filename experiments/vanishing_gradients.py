"""The vanishing_gradients experiment, as a script.

Same as `dl reproduce --only vanishing_gradients [--quick] [--seed S] [--out DIR]`:
python experiments/vanishing_gradients.py --quick --out runs/vanishing_gradients
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--only", "vanishing_gradients", *sys.argv[1:]]))
