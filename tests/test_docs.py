"""README.md and docs/*.md keep their promises: every shell command they show runs, every relative link
resolves (files and #anchors), every Markdown table renders, and docs/cli.md names every flag.

Commands are the lines of fenced ```bash / ```sh blocks (comments dropped, `\\` continuations joined)
and the `$ ` lines of ```console blocks (the other lines there are output). They run in order, page
after page, with `bash -o pipefail` in one scratch folder (so a `bench.report` finds the `bench.run`
before it), with this checkout first on PYTHONPATH, `/tmp/` moved into the scratch folder and the data
cache there too. A command that trains is made tiny (`tiny`): one epoch, one trial, `--arch resnet8`
where it names no architecture and `--methods dense,snip` where it names no methods or grid. Two HTML
comments on the line before a block change that:

  <!-- docs-test: skip REASON -->   the block is not run (a cluster, a GPU, real data, root, minutes)
  <!-- docs-test: file NAME -->     (before a ```python block) its code is written to NAME in the folder
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import check, perf, records, report, run, status

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_FENCES = ("bash", "sh", "console")
MARKER = re.compile(r"<!--\s*docs-test:\s*(skip|file)\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\S*)\s*$")
COMMAND_TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    marker: tuple[str, str] | None  # ("skip", reason) or ("file", name)


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, each with the docs-test marker on the line before it."""
    found, lines = [], page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = next(close for close in range(index + 1, len(lines)) if lines[close].startswith("```"))
        marker = MARKER.search(lines[index - 1]) if index else None
        found.append(Block(page, index + 1, opening.group(1), "\n".join(lines[index + 1:end]),
                           (marker.group(1), marker.group(2)) if marker else None))
        index = end + 1
    return found


def prose(page: Path) -> str:
    """The page without its fenced blocks and inline code (where links and tables are not)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return text


def commands(block: Block) -> list[str]:
    """The commands a shell block shows, as a user would type them."""
    if block.language == "console":
        return [line[2:] for line in block.text.splitlines() if line.startswith("$ ")]
    joined = re.sub(r"\\\n\s*", "", block.text)
    shown = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            shown.append(line)
    return shown


TRAINING_RUN = re.compile(r"python -m bench\.run\b")
NOT_TRAINING = ("--dry-run", "--list-grids", "--describe")


def tiny(command: str) -> str:
    """`command` with a training run shrunk: one epoch, one trial, each method's cheap settings (`--quick`:
    a run that names methods otherwise gets their full defaults, e.g. IMC's 10 pretraining epochs), and
    two methods unless it names some."""
    if not TRAINING_RUN.search(command) or any(flag in command for flag in NOT_TRAINING):
        return command
    for flag in ("--epochs", "--trials"):
        if re.search(rf"{flag} \d+", command):
            command = re.sub(rf"{flag} \d+", f"{flag} 1", command)
        else:
            command = TRAINING_RUN.sub(lambda match, flag=flag: f"{match.group(0)} {flag} 1", command, count=1)
    if "--arch" not in command:
        command = TRAINING_RUN.sub(lambda match: f"{match.group(0)} --arch resnet8", command, count=1)
    if "--quick" not in command:
        command = TRAINING_RUN.sub(lambda match: f"{match.group(0)} --quick", command, count=1)
    if not any(flag in command for flag in ("--methods", "--grid", "--filter")):
        command = TRAINING_RUN.sub(lambda match: f"{match.group(0)} --methods dense,snip", command, count=1)
    return command


def runnable(command: str, workspace: Path) -> str:
    command = tiny(command).replace("/tmp/", f"{workspace}/tmp/")
    return re.sub(r"(^|\s)python -m ", lambda match: f"{match.group(1)}{shlex.quote(sys.executable)} -m ",
                  command)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("docs-commands")
    (folder / "tmp").mkdir()
    for page in PAGES:
        for block in blocks(page):
            if block.marker and block.marker[0] == "file":
                (folder / block.marker[1]).write_text(block.text + "\n")
    return folder


RAN: set[str] = set()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_commands_run_as_written(page: Path, workspace: Path):
    environment = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PRUNEBENCH_CACHE": str(workspace / "cache"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    environment.pop("PRUNEBENCH_PLUGINS", None)
    for block in blocks(page):
        if block.language not in SHELL_FENCES:
            continue
        if block.marker and block.marker[0] == "skip":
            assert block.marker[1], f"{page.name}:{block.line}: a skipped block must say why"
            continue
        for command in commands(block):
            shell = runnable(command, workspace)
            if shell in RAN:
                continue
            result = subprocess.run(["bash", "-o", "pipefail", "-c", shell], cwd=workspace, env=environment,
                                    capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
            assert result.returncode == 0, (f"{page.name}:{block.line}: `{command}` (run as `{shell}`) exited "
                                            f"{result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
            RAN.add(shell)


def test_tiny_shrinks_training_runs_only():
    assert tiny("python -m bench.run --results /tmp/x") == \
        "python -m bench.run --methods dense,snip --quick --arch resnet8 --trials 1 --epochs 1 --results /tmp/x"
    assert tiny("python -m bench.run --methods snip --arch resnet20 --epochs 160 --trials 3") == \
        "python -m bench.run --quick --methods snip --arch resnet20 --epochs 1 --trials 1"
    assert tiny("python -m bench.run --grid full --dry-run") == "python -m bench.run --grid full --dry-run"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    names = set()
    for line in prose(page).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*)$", line)
        if heading:
            name = slug(heading.group(1))
            count = seen.get(name, 0)
            seen[name] = count + 1
            names.add(name if count == 0 else f"{name}-{count}")
    return names


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def links(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", prose(page))
    return LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_links_resolve(page: Path):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def cells(row: str) -> int:
    return len(re.split(r"(?<!\\)\|", row.strip().strip("|")))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_tables_render(page: Path):
    """Every row of a table has as many cells as its header, and the second row is the delimiter row."""
    bad, table = [], []
    for line in [*prose(page).splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            header = cells(table[0])
            if len(table) < 2 or not re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*\|?", table[1].strip()):
                bad.append(f"no delimiter row under {table[0][:60]!r}")
            bad += [f"{cells(row)} cells under a {header}-cell header: {row[:60]!r}" for row in table[1:]
                    if cells(row) != header]
            table = []
    assert not bad, f"{page.relative_to(REPO)}: " + "; ".join(bad)


PARSERS = {"bench.run": run.build_parser, "bench.status": status.build_parser, "bench.report": report.build_parser,
           "bench.perf": perf.main_parser, "bench.records": records.build_parser,
           "bench.check": check.build_parser}


@pytest.mark.parametrize("command", PARSERS)
def test_cli_page_names_every_flag(command: str):
    page = (REPO / "docs" / "cli.md").read_text()
    section = re.search(rf"^## {re.escape(command)}\n(.*?)(?=^## |\Z)", page, re.S | re.M)
    assert section, f"docs/cli.md has no section '## {command}'"
    flags = {option for action in PARSERS[command]()._actions for option in action.option_strings
             if option.startswith("--") and option != "--help"}
    missing = sorted(flag for flag in flags if not re.search(rf"`{re.escape(flag)}[` =]", section.group(1)))
    assert not missing, f"docs/cli.md, section {command}, does not describe {missing}"


def test_readme_fits_a_screen_or_four():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200
