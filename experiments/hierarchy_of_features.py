"""The hierarchy of features. Same as `dl reproduce --only hierarchy_of_features [--quick]`.

python experiments/hierarchy_of_features.py --quick --out runs/hierarchy_of_features
"""

import sys

from dl.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "--only", "hierarchy_of_features", *sys.argv[1:]]))
