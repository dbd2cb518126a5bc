import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_does_no_device_work():
    """With JAX_PLATFORMS naming no real platform, any backend work fails: importing dl
    succeeds and only the first device query fails, so the import touched no backend
    (public APIs only)."""
    code = (
        "import dl, dl.data, dl.models, dl.train, dl.optim, dl.cli, dl.recipes\n"
        "import jax\n"
        "try:\n"
        "    jax.devices()\n"
        "except RuntimeError:\n"
        "    print('ok')\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="no_such_platform")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _readme_python_blocks():
    text = (ROOT / "README.md").read_text()
    blocks, inside, cur = [], False, []
    for line in text.splitlines():
        if line.strip() == "```python":
            inside, cur = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append("\n".join(cur))
        elif inside:
            cur.append(line)
    return blocks


def test_readme_library_example_runs():
    blocks = _readme_python_blocks()
    assert blocks, "README has no python example"
    ns: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), ns)  # noqa: S102
    # the example ends by computing the test accuracy of the trained model
    assert ns["result"].history[-1]["test/accuracy"] > 0.9


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    cmds = [c for c in block if c.strip() and not c.startswith("#")]
    assert len(cmds) == 2
    assert "dl train --model cnn --dataset mnist5k" in cmds[0] or "dl reproduce" in cmds[0]
    assert "pytest" in cmds[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "README.md" in ci  # CI takes its commands from the README


def test_ruff_clean():
    import shutil

    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    for args in (["check"], ["format", "--check"]):
        out = subprocess.run([ruff, *args, str(ROOT)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_readme_is_short_and_links_nothing_outside_the_repository():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "http://" not in text and "https://" not in text and "../" not in text
    for target in __import__("re").findall(r"`((?:dl|experiments|tests|colab)/[\w./]+)`", text):
        assert (ROOT / target.rstrip(".")).exists(), target


def test_fit_reads_top_to_bottom_in_at_most_150_lines():
    import ast

    import dl.train

    tree = ast.parse(Path(dl.train.__file__).read_text())
    fit = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "fit")
    body = fit.body[1:]  # without the docstring
    assert body[-1].end_lineno - body[0].lineno + 1 <= 150


def test_readme_supported_versions_match_what_ci_installs():
    """The README's Colab row is the set .ci/run installs, and the dependency floors are
    that set's versions (the oldest CI runs)."""
    import re
    import tomllib

    pins = dict(
        line.split("==")
        for line in (ROOT / ".ci" / "colab-constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| Colab"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == [pins["jax"], pins["flax"], pins["optax"], pins["orbax-checkpoint"]]
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = dict(re.match(r"([\w-]+)>=([\d.]+)", d).groups() for d in deps if ">=" in d)
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint"):
        assert floors[name] == pins[name], name
    assert any(d.startswith("orbax-checkpoint") and "<1" in d for d in deps)
