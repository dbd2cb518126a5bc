"""The index report of `dl reproduce` (issue 9): Markdown and self-contained HTML."""

import json

from dl.experiments.common import verdict
from dl.experiments.index import write_index


def test_index_has_one_table_across_experiments_and_embeds_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (tmp_path / "a" / "figures").mkdir(parents=True)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "a" / "figures" / "curve.png")
    plt.close(fig)
    entries = [
        {
            "experiment": "a",
            "time_s": 12.0,
            "verdicts": [
                verdict("claim one", "x > 1", "x = 2", True),
                verdict("claim <two>", "|y| < 0", "y = 3", False),
            ],
            "figures": ["figures/curve.png"],
        },
        {"experiment": "b", "time_s": 1.0, "verdicts": [verdict("c3", "z", "no GPU", None)]},
        {"experiment": "c", "time_s": 0.5, "error": "RuntimeError: boom"},
    ]
    paths = write_index(tmp_path, entries, quick=True, seed=3)
    md = (tmp_path / "index.md").read_text()
    assert "| [a](a/report.md) | claim one | x > 1 | x = 2 | **PASS** |" in md
    assert "| claim <two> | \\|y\\| < 0 | y = 3 | **FAIL** |" in md  # pipes escaped
    assert "**FAIL**" in md and "**NOT MEASURED**" in md and "RuntimeError: boom" in md
    assert "1 ERROR, 1 FAIL, 1 NOT MEASURED, 1 PASS" in md
    page = (tmp_path / "index.html").read_text()
    assert page.count("<tr>") == 1 + 4  # header + 4 rows
    assert "claim &lt;two&gt;" in page  # escaped
    assert "src='data:image/png;base64," in page  # the figure travels inside the page
    assert "dl reproduce --quick (seed 3)" in page
    assert json.loads(paths[0].read_text())[2]["error"] == "RuntimeError: boom"
