"""`python -m bench.report`: the paper's tables and figures, regenerated from the job directories.

Reads only `<results>/jobs/*` (the jobs of `--grid` when given, so jobs the grid lists but that have
no results are shown as missing), builds one tidy table (one row per job and round), and writes to
`--out` (default `reports/<grid>/`):
  tables/<dataset>-<arch>-{found,best,paper}.{md,tex,csv}   our value beside the paper's, mean ± std (n)
  figures/*.png|pdf                                    accuracy vs sparsity, cost, spectrum, sensitivity
  records.csv                                          the tidy table itself
  README.md                                            what ran, where, code version, missing/failed jobs
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench import figures
from bench.atomic import write_text
from bench.cli import guarded
from bench.collect import Collection, collect
from bench.errors import BenchError
from bench.grid import load_grid
from bench.paper import paper_table_number
from bench.tables import TABLE_KINDS, build_tables, formatted

FORMATS = ("md", "tex", "csv")
KIND_TITLES = {"found": "Accuracy with found sparsity", "best": "Sparsity with highest accuracy",
               "paper": "Accuracy at the paper's sparsity"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results folder (default: results/)")
    parser.add_argument("--grid", default="default", help="grid whose jobs to report (default: default)")
    parser.add_argument("--all-jobs", action="store_true", help="report every job on disk, not one grid's")
    parser.add_argument("--out", help="output folder (default: reports/<grid>)")
    parser.add_argument("--format", default="md,tex,csv", help="table formats, comma-separated: md, tex, csv")
    return parser


def write_table(summary: pd.DataFrame, base: Path, formats: tuple[str, ...]) -> str:
    """Write one table in each format; return its Markdown."""
    shown = formatted(summary)
    markdown = tabulate(shown, headers="keys", tablefmt="github", showindex=False)
    if "md" in formats:
        write_text(base.with_suffix(".md"), markdown + "\n")
    if "tex" in formats:
        write_text(base.with_suffix(".tex"), tabulate(shown, headers="keys", tablefmt="latex_booktabs",
                                                      showindex=False) + "\n")
    if "csv" in formats:
        write_text(base.with_suffix(".csv"), summary.to_csv(index=False))
    return markdown


def _job_list(jobs: pd.DataFrame, with_error: bool) -> str:
    lines = []
    for _, job in jobs.iterrows():
        line = f"- `{job.job_id}` ({job.state})"
        if with_error and job.error:
            line += f": {job.error.splitlines()[0][:200]}"
            line += f" — see `{job.folder}/status.json`" if job.state == "failed" else ""
        lines.append(line)
    return "\n".join(lines) or "none"


def write_report(collection: Collection, out: Path, title: str, description: str,
                 formats: tuple[str, ...]) -> Path:
    records, jobs = collection.records, collection.jobs
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    if not records.empty:
        write_text(out / "records.csv", records.drop(columns=["extra"]).to_csv(index=False))
        for (dataset, arch, kind), summary in build_tables(records).items():
            markdown = write_table(summary, out / "tables" / f"{dataset}-{arch}-{kind}", formats)
            number = paper_table_number(TABLE_KINDS[kind][1], dataset)
            source = f"paper's Table {number}" if number else "no paper table for this dataset"
            sections.append(f"### {KIND_TITLES[kind]}: {dataset}, {arch} ({source})\n\n{markdown}\n")
        for dataset, arch in records.groupby(["dataset", "arch"]).groups:
            for path in figures.accuracy_vs_sparsity(records, dataset, arch, out / "figures"):
                if path.suffix == ".png":
                    sections.append(f"![accuracy vs sparsity, {dataset} {arch}](figures/{path.name})\n")
            for path in figures.cost_per_method(records, dataset, arch, out / "figures"):
                if path.suffix == ".png":
                    sections.append(f"![cost per method, {dataset} {arch}](figures/{path.name})\n")
        estimates = lipschitz_estimates(records)
        if not estimates.empty:
            sections.append(lipschitz_tables(estimates, out / "tables", formats))
        for path in figures.spectrum(records, out / "figures") + figures.sensitivity(records, out / "figures") \
                + figures.lipschitz(estimates, out / "figures"):
            if path.suffix == ".png":
                sections.append(f"![{path.stem}](figures/{path.name})\n")
    done = int((jobs.state == "done").sum())
    devices = ", ".join(sorted(set(records.device))) if not records.empty else "—"
    threads = ", ".join(sorted({f"{int(count)}" for count in jobs.threads.dropna() if count != ""})) or "—"
    shas = ", ".join(sorted({sha[:10] for sha in jobs.git_sha.dropna()})) or "—"
    readme = f"""# Report: {title}

{description}

Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench.report` from the job folders only.

- jobs: {len(jobs)} in all, {done} done, {len(collection.failed)} failed, {len(collection.blocked)} blocked by a failed \
job, {len(collection.missing)} missing, corrupt or unfinished
- device(s): {devices}; CPU threads (torch): {threads} (results are deterministic for the same seed, CPU and thread count)
- code version (git sha of the runs): {shas}
- cells: mean ± sample std over trials (n in its own column); accuracy in %; the paper's value in
  parentheses where the supplement has the table. "Accuracy with found sparsity" uses IMC's s* of each
  trial (methods run at `found`, LTH at its nearest round); "Sparsity with highest accuracy" picks each
  method's sweep point with the highest mean accuracy; "Accuracy at the paper's sparsity" shows every
  method at the s* the paper reports for IMC (grids' `paper` level), beside the paper's found-sparsity
  row of the same method. FLOPs are theoretical (dense FLOPs x layer density).

## Failed jobs

{_job_list(collection.failed, with_error=True)}

## Jobs blocked by a failed job

{_job_list(collection.blocked, with_error=True)}

## Missing, corrupt or unfinished jobs

{_job_list(collection.missing, with_error=True)}

## Tables and figures

{chr(10).join(sections) or "No finished job yet."}
"""
    path = out / "README.md"
    write_text(path, readme)
    return path


def lipschitz_estimates(records: pd.DataFrame) -> pd.DataFrame:
    """Rows (dataset, arch, trial, p, delta, K and K's diagnostics) from records carrying a Lipschitz sweep."""
    rows = []
    for _, record in records.iterrows():
        extra = record.extra if isinstance(record.extra, dict) else {}
        for estimate in extra.get("lipschitz_sweep", []):
            rows.append({"dataset": record.dataset, "arch": record.arch, "trial": record.trial,
                         "p": estimate["p"], "delta": estimate["delta"], "K": estimate["value"],
                         "hessian_change": estimate.get("hessian_change"),
                         "relu_flip_share": estimate.get("relu_flip_share")})
    columns = ["dataset", "arch", "trial", "p", "delta", "K", "hessian_change", "relu_flip_share"]
    return pd.DataFrame(rows, columns=columns).drop_duplicates()


def lipschitz_tables(estimates: pd.DataFrame, folder: Path, formats: tuple[str, ...]) -> str:
    """Tables 14-15: mean K over trials by (p, Delta), one row per dataset and arch; returns Markdown."""
    table = estimates.pivot_table(index=["dataset", "arch"], columns=["p", "delta"], values="K", aggfunc="mean")
    table.columns = [f"p={p:g}, Δ={delta:g}" for p, delta in table.columns]
    shown = table.map(lambda value: f"{value:.3g}").reset_index()
    markdown = tabulate(shown, headers="keys", tablefmt="github", showindex=False)
    if "md" in formats:
        write_text(folder / "lipschitz.md", markdown + "\n")
    if "tex" in formats:
        write_text(folder / "lipschitz.tex", tabulate(shown, headers="keys", tablefmt="latex_booktabs",
                                                      showindex=False) + "\n")
    if "csv" in formats:
        write_text(folder / "lipschitz.csv", estimates.to_csv(index=False))
    return ("### Lipschitz constant K of F(U) (paper tables 14-15: e.g. 6.17e-12 for CIFAR-10 at p=2, "
            f"Δ=0.01)\n\n{markdown}\n")


@guarded
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    formats = tuple(item.strip() for item in args.format.split(",") if item.strip())
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise BenchError(f"unknown format(s) {unknown}; accepted: {', '.join(FORMATS)}")
    results = Path(args.results)
    if not (results / "jobs").is_dir():
        raise BenchError(f"no job folders under {results / 'jobs'}; run `python -m bench.run` first or pass --results DIR")
    if args.all_jobs:
        collection, title, description = collect(results), "all jobs", f"Every job under `{results}`."
        out = Path(args.out or "reports/all")
    else:
        grid = load_grid(args.grid)
        collection, title, description = collect(results, grid.plan()), f"grid `{grid.name}`", grid.description
        out = Path(args.out or f"reports/{grid.name}")
    path = write_report(collection, out, title, description, formats)
    print(f"wrote {path} ({len(collection.records)} records from {len(collection.jobs)} jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
