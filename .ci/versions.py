"""Print one row of the README's "supported versions" table for this environment:
`python .ci/versions.py LABEL RUNS` (CI calls it in each set it tests)."""

import sys
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("jax", "flax", "optax", "orbax-checkpoint")


def row(label: str, runs: str) -> str:
    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    return "| " + " | ".join([label, *(v(p) for p in PACKAGES), runs]) + " |"


if __name__ == "__main__":
    label, runs = (sys.argv[1:] + ["this environment", "-"])[:2]
    print("| set | " + " | ".join(PACKAGES) + " | runs |")
    print("|---|" + "---|" * (len(PACKAGES) + 1))
    print(row(label, runs))
