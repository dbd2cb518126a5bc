"""The adversarial experiment, as a script.

Same as `dl reproduce --only adversarial [--quick] [--seed S] [--out DIR]`:
python experiments/adversarial.py --quick --out runs/adversarial
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--only", "adversarial", *sys.argv[1:]]))
