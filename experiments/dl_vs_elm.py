"""Deep learning versus ELM. Same as `dl reproduce --only dl_vs_elm [--quick]`.

python experiments/dl_vs_elm.py --quick --out runs/dl_vs_elm
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--only", "dl_vs_elm", *sys.argv[1:]]))
