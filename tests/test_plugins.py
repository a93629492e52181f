"""Plugins the way a user writes them: the example package of `docs/extending.md` (its code blocks, taken
from the page) installed with a real entry point (a `.dist-info` folder with `entry_points.txt` on the
path, which `importlib.metadata` reads as it reads a pip-installed one), run in a grid beside snip and
synflow, reported (also where the plugin is not installed), checked by `bench.check`, rerun after a
version bump; an architecture and a dataset from the same package; a broken or clashing plugin is one
line naming it."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.plugins import METHODS_GROUP, PluginError, load_entry_points
from methods.registry import load_plugins

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs" / "extending.md"
BLOCK = re.compile(r"<!-- docs-test: file (\S+) -->\n```\w*\n(.*?)```", re.DOTALL)
SECTION = re.compile(r'^\[project\.entry-points\."([\w.]+)"\]$', re.MULTILINE)


def doc_blocks() -> dict[str, str]:
    """File name -> code of each block of docs/extending.md that the docs test writes to a file."""
    return {name: code for name, code in BLOCK.findall(DOCS.read_text())}


def install(site: Path, distribution: str, modules: dict[str, str], entry_points: str) -> Path:
    """Put `modules` and a `<distribution>-0.1.0.dist-info` with `entry_points` (pyproject's
    `[project.entry-points."group"]` tables) in `site`: what pip leaves for the importer to find."""
    site.mkdir(parents=True, exist_ok=True)
    for name, code in modules.items():
        (site / name).write_text(code)
    info = site / f"{distribution.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(SECTION.sub(r"[\1]", entry_points).replace('"', ""))
    importlib.invalidate_caches()
    return site


def bench(command: str, *args: str, plugin: Path | None) -> subprocess.CompletedProcess:
    """`python -m bench.<command>` in a fresh process, with the plugin's folder on the path or without it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(plugin) if plugin else "", str(REPO_ROOT)])),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", f"bench.{command}", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    blocks = doc_blocks()
    entry_points = blocks["pyproject.toml"].split("\n\n", 1)[1] + "\n" + blocks["entry-points.toml"]
    modules = {name: blocks[name] for name in ("grad_norm.py", "mlp_arch.py", "stripes_data.py")}
    return install(tmp_path_factory.mktemp("site"), "grad-norm", modules, entry_points)


def test_the_documented_plugin_is_complete_and_imports_only_the_public_module():
    blocks = doc_blocks()
    assert 15 <= len([line for line in blocks["grad_norm.py"].splitlines() if line.strip()]) <= 20
    for name in ("grad_norm.py", "mlp_arch.py", "stripes_data.py"):
        imports = re.findall(r"^(?:from|import) (\S+)", blocks[name], re.MULTILINE)
        assert not [module for module in imports if module.split(".")[0] in ("bench", "baselines")
                    or any(part.startswith("_") for part in module.split("."))], (name, imports)
        assert "methods.api" in imports, name


def test_a_plugin_runs_in_a_grid_is_reported_checked_and_rerun_when_its_version_changes(plugin, tmp_path):
    results = tmp_path / "results"
    common = ("--dataset", "digits@300", "--arch", "resnet8", "--epochs", "1", "--results", str(results),
              "--device", "cpu")
    ran = bench("run", "--methods", "grad-norm,snip,synflow", "--sparsity", "0.5", *common, plugin=plugin)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.count("| done") == 3 and "grad-norm" in ran.stdout
    folder = next((results / "jobs").glob("grad-norm-*"))
    recorded = json.loads((folder / "provenance.json").read_text())["methods"]["grad-norm"]
    assert recorded["module"] == "grad_norm" and recorded["version"] == 1
    # the sources of the class and of its method bases (PruneAtInit's module): a change of either can change results
    assert set(recorded["sources"]) == {"grad_norm", "baselines._scoring"} and len(recorded["source_sha256"]) == 64

    # the report reads records, not code: without the plugin on the path it reports the row and says so
    reported = bench("report", "--results", str(results), "--out", str(tmp_path / "report"), plugin=None)
    assert reported.returncode == 0, reported.stderr
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "method grad-norm: not installed here" in readme and "3 done" in readme
    tables = "".join(path.read_text() for path in (tmp_path / "report" / "tables").glob("*.md"))
    assert all(f"| {name} " in tables for name in ("grad-norm", "SNIP", "SynFlow")), tables
    status = bench("status", "--results", str(results), "--all", plugin=None)
    assert status.returncode == 0 and sum(line.startswith("done") for line in status.stdout.splitlines()) == 3, status.stdout

    checked = bench("check", "grad-norm", "--epochs", "1", plugin=plugin)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "grad-norm: passes the contract" in checked.stdout

    # a source change under the same version is noted; a version bump reruns the method's jobs, said so
    source = plugin / "grad_norm.py"
    original = source.read_text()
    try:
        source.write_text(original.replace("100, context.seed", "50, context.seed"))
        reported = bench("report", "--results", str(results), "--out", str(tmp_path / "again"), plugin=plugin)
        assert "1 job(s) ran source code that differs from the installed one" in \
            (tmp_path / "again" / "README.md").read_text(), reported.stderr
        source.write_text(source.read_text().replace("version = 1", "version = 2"))
        rerun = bench("run", "--methods", "grad-norm,snip,synflow", "--sparsity", "0.5", *common, plugin=plugin)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert "note: method grad-norm is at version 2: 1 job(s) done under an earlier version run again" in rerun.stdout
        assert len(list((results / "jobs").glob("grad-norm-*"))) == 2 and len(list((results / "jobs").glob("snip-*"))) == 1
    finally:
        source.write_text(original)


def test_an_architecture_and_a_dataset_from_a_plugin(plugin, tmp_path):
    ran = bench("run", "--methods", "grad-norm", "--arch", "mlp2", "--dataset", "stripes", "--sparsity", "0.5",
                "--epochs", "5", "--results", str(tmp_path / "results"), "--device", "cpu", plugin=plugin)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    record = json.loads(next((tmp_path / "results" / "jobs").glob("grad-norm-stripes-mlp2-*/metrics.json")).read_text())[0]
    assert record["achieved_sparsity"] == pytest.approx(0.5, abs=0.005) and record["accuracy"] > 0.9
    unknown = bench("run", "--methods", "grad-norm", "--arch", "mlp2", "--dataset", "stripes", plugin=None)
    assert unknown.returncode == 2 and "unknown" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("code, says", [
    ("import a_module_that_is_not_there\n", "failed to import module 'broken_plugin': ModuleNotFoundError"),
    ("from methods.api import Method, register\n\n@register('snip')\nclass Clash(Method):\n"
     "    def run(self, context):\n        return []\n", "registers a name that exists: method 'snip' is registered twice"),
])
def test_a_broken_or_clashing_plugin_is_one_error_naming_it(tmp_path, monkeypatch, code, says):
    site = install(tmp_path / "site", "broken", {"broken_plugin.py": code},
                   '[project.entry-points."prunebench.methods"]\nbroken = "broken_plugin"\n')
    load_plugins()  # the built-in methods first, as in any run (a clash needs them)
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginError) as raised:
        load_entry_points(METHODS_GROUP)
    message = str(raised.value)
    assert says in message and "entry point 'broken = broken_plugin'" in message and "distribution broken 0.1.0" in message
    assert "\n" not in message
    ran = bench("run", "--methods", "snip", "--dry-run", plugin=site)
    assert ran.returncode == 2 and says in ran.stderr and len(ran.stderr.strip().splitlines()) == 1

