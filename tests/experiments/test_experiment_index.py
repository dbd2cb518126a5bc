"""The index report of `dl reproduce` (issue 9): Markdown and self-contained HTML."""

import json

from dl.experiments.common import check, seeded_claim, verdict
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
        {
            "experiment": "b",
            "time_s": 1.0,
            "verdicts": [
                verdict("c3", "z", "no GPU", None),
                seeded_claim("c4", "r > 1", [0.5, 2.0, 3.0], threshold=1.0),
                check("sane", "s", "ok", True),
            ],
        },
        {"experiment": "c", "time_s": 0.5, "error": "RuntimeError: boom"},
    ]
    paths = write_index(tmp_path, entries, quick=True, seed=3)
    md = (tmp_path / "index.md").read_text()
    assert "| [a](a/report.md) | claim one | x > 1 | x = 2 |  | **PASS** |" in md
    assert "| claim <two> | \\|y\\| < 0 | y = 3 |  | **FAIL** |" in md  # pipes escaped
    assert "**FAIL**" in md and "**NOT MEASURED**" in md and "RuntimeError: boom" in md
    assert "| [b](b/report.md) | c4 | r > 1 |" in md and "**INCONCLUSIVE** |" in md
    assert "[0.5, 3] (3 seeds; needs > 1)" in md
    claims, checks = md.split("## Sanity and acceptance checks")
    assert "sane" in checks and "sane" not in claims and "c4" in claims
    assert "claims: 1 PASS, 1 FAIL, 1 INCONCLUSIVE, 1 NOT MEASURED; checks: 1 PASS" in md
    assert "1 experiment(s) did not finish (ERROR)" in md
    page = (tmp_path / "index.html").read_text()
    assert page.count("<tr>") == 2 + 6  # two headers, 6 rows
    assert "claim &lt;two&gt;" in page  # escaped
    assert "src='data:image/png;base64," in page  # the figure travels inside the page
    assert "dl reproduce --quick (seed 3)" in page
    assert json.loads(paths[0].read_text())[2]["error"] == "RuntimeError: boom"
