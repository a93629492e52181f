"""`python -m bench.report`: the paper's tables and figures, regenerated from the job directories.

Reads only `<results>/plan.json` and `<results>/jobs/*`. By default it reports the plan that
`bench.run` recorded in the results folder (every job it planned, so jobs without results are shown
as missing); `--grid NAME` reports a grid's jobs instead, `--all-jobs` every job folder. Job folders
outside the reported jobs are listed, never dropped. It builds one tidy table (one row per job and
round) and writes to `--out` (default `<results>/report/`, with `--grid` `reports/<grid>/`):
  tables/<dataset>-<arch>-{found,best,paper}.{md,tex,csv}   our value beside the paper's, mean ± std (n)
  tables/<dataset>-<arch>-{paired,ranking}-<level>.*   paired differences to dense and the reference
                                                       (`--reference`, default IMC's variants) with 95%
                                                       t-intervals over trials, and the ranking they give
  figures/*.png (.pdf, .svg: --figure-formats)         accuracy vs density (all methods) and vs sparsity
                                                       (per method), per-layer density, training curves,
                                                       cost, spectrum, sensitivity, Lipschitz, paired
                                                       differences (forest plot) per sparsity level
  records.csv                                          the tidy table itself
  README.md                                            what ran, where, code version, missing/failed jobs
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench import figure_saves, figures, paired
from bench import records as records_archive
from bench.atomic import CorruptFileError, read_file, read_json, write_text
from bench.cli import guarded
from bench.collect import Collection, collect
from bench.errors import BenchError
from bench.grid import load_grid
from bench.method_identity import code_notes
from bench.paper import BASELINE, paper_table_number
from bench.plans import describe_runs, plan_path, recorded_jobs
from bench.safe_paths import check_tree
from bench.stages import STAGES_FOLDER
from bench.store import JOBS_FOLDER, RUNNING
from bench.tables import TABLE_KINDS, build_tables, formatted
from bench.tracking import job_states

FORMATS = ("md", "tex", "csv")
KIND_TITLES = {"found": "Accuracy with found sparsity", "best": "Sparsity with highest accuracy",
               "paper": "Accuracy at the paper's sparsity"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results folder (default: results/)")
    parser.add_argument("--grid", help="report this grid's jobs (name or .toml path) instead of the plan that "
                                       "bench.run recorded in the results folder (plan.json)")
    parser.add_argument("--all-jobs", action="store_true", help="report every job on disk, not one grid's")
    parser.add_argument("--out", help="output folder (default: <results>/report for the recorded plan, "
                                      "reports/<grid> with --grid, reports/all with --all-jobs)")
    parser.add_argument("--format", default="md,tex,csv", help="table formats, comma-separated: md, tex, csv")
    parser.add_argument("--from-records", metavar="ARCHIVE",
                        help="report the records packed in ARCHIVE (a records.tar.xz beside a committed report) "
                             "instead of a results folder; --out defaults to the archive's folder")
    parser.add_argument("--pack-records", action="store_true",
                        help=f"also pack the reported jobs' records into <out>/{records_archive.ARCHIVE_NAME} "
                             "(spec, status, metrics, epochs, layers, provenance; no checkpoints)")
    parser.add_argument("--reference", help="method every other is compared with, paired by trial, besides dense "
                                            "(default: IMC's variants where they ran)")
    parser.add_argument("--figure-workers", type=int, metavar="N",
                        help="figure functions drawn at once, each in a forked process, while the tables are "
                             "written (default: the cores this process may use; 1 draws them one by one in "
                             "this process)")
    parser.add_argument("--figure-formats", default="png", metavar="LIST",
                        help="figure formats, comma-separated: png (always written: the README shows it), pdf, "
                             "svg; e.g. png,pdf for a paper's vector figures (default: png; each format adds "
                             "to the report's time)")
    return parser


def write_table(summary: pd.DataFrame, base: Path, formats: tuple[str, ...]) -> str:
    """Write one table in each format; return its Markdown."""
    return write_frame(formatted(summary), summary, base, formats)


def write_frame(shown: pd.DataFrame, raw: pd.DataFrame, base: Path, formats: tuple[str, ...]) -> str:
    """Write a table as a reader sees it (`shown`: md, tex) and its numbers (`raw`: csv); return its Markdown."""
    markdown = tabulate(shown, headers="keys", tablefmt="github", showindex=False)
    if "md" in formats:
        write_text(base.with_name(f"{base.name}.md"), markdown + "\n")
    if "tex" in formats:
        write_text(base.with_name(f"{base.name}.tex"), tabulate(shown, headers="keys", tablefmt="latex_booktabs",
                                                      showindex=False) + "\n")
    if "csv" in formats:
        write_text(base.with_name(f"{base.name}.csv"), raw.to_csv(index=False))
    return markdown


def method_code_lines(jobs: pd.DataFrame) -> str:
    """Bullets where jobs ran method code that differs (`bench.method_identity.code_notes`)."""
    return "".join(f"- {note}\n" for note in code_notes(jobs))


def paired_sections(records: pd.DataFrame, forest: figure_saves.Drawing, out: Path, formats: tuple[str, ...],
                    reference: str | None) -> list[str | Callable[[], str]]:
    """Per comparison point: the paired differences to dense and the reference, the ranking, the forest
    plot (`forest`, drawn by `bench.figure_saves`: its section is finished once the figures are)."""
    accuracies = paired.trial_accuracies(records)
    differences = paired.differences(records, reference, accuracies)
    if differences.empty:
        return []
    ranks = paired.ranking(records, accuracies)
    sections: list[str | Callable[[], str]] = [
        PAIRED_INTRO.format(reference=f"`{reference}`" if reference else "IMC's variants (where they ran)")]
    for (dataset, arch, level), point in differences.groupby(["dataset", "arch", "level"], sort=False):
        base = out / "tables" / f"{dataset}-{arch}-paired-{level}"
        markdown = write_frame(paired.shown_differences(point), point, base, formats)
        ranked = ranks[(ranks.dataset == dataset) & (ranks.arch == arch) & (ranks.level == level)]
        ranking_markdown = write_frame(paired.shown_ranking(ranked), ranked,
                                       out / "tables" / f"{dataset}-{arch}-ranking-{level}", formats)
        text = (f"### Paired differences: {dataset}, {arch}, sparsity {level}\n\n{markdown}\n\n"
                f"Ranking:\n\n{ranking_markdown}\n")
        sections.append(lambda text=text, stem=f"paired-differences-{dataset}-{arch}-{level}", level=level:
                        text + figure_links(forest, lambda path: f"paired differences {level}", only=stem))
    return sections


def paired_figure(records: pd.DataFrame, reference: str | None, folder: Path) -> list[Path]:
    """The forest plots of the paired differences (computed here too: in a figure worker, the report's own
    process need not wait for them before the figures start)."""
    differences = paired.differences(records, reference)
    return [] if differences.empty else figures.paired_differences(differences, folder)


def figure_links(drawing: figure_saves.Drawing, caption: Callable[[Path], str] | None = None,
                 only: str | None = None) -> str:
    """Markdown image links to the PNGs a figure function drew (the one named `only`, if given), one
    paragraph each, captioned by `caption(path)` (default: the file's name in words)."""
    return "".join(f"\n![{caption(path) if caption else path.stem.replace('-', ' ')}](figures/{path.name})\n"
                   for path in drawing.shown() if only is None or path.stem == only)


def _job_list(jobs: pd.DataFrame, with_error: bool) -> str:
    lines = []
    for _, job in jobs.iterrows():
        line = f"- `{job.job_id}` ({job.state})"
        if with_error and job.error:
            line += f": {job.error.splitlines()[0][:200]}"
            line += f" — see `{job.folder}/status.json`" if job.state == "failed" else ""
        lines.append(line)
    return "\n".join(lines) or "none"


def job_csv(jobs: pd.DataFrame, name: str) -> pd.DataFrame:
    """One CSV file of every done job (`layers.csv`, `epochs.csv`), stacked, with a job_id column."""
    frames = []
    for _, job in jobs[jobs.state == "done"].iterrows():
        path = Path(job.folder) / name
        if not path.exists() and not path.is_symlink():
            continue
        try:
            frame = pd.read_csv(io.BytesIO(read_file(path)))
        except pd.errors.EmptyDataError:
            continue
        except (CorruptFileError, pd.errors.ParserError) as error:  # named; the figure goes without this job
            print(f"warning: {error if isinstance(error, CorruptFileError) else f'{path} is not CSV'}; left out "
                  "of the figures", file=sys.stderr, flush=True)
            continue
        frames.append(frame.assign(job_id=job.job_id))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def epochs_with_stages(records: pd.DataFrame, jobs: pd.DataFrame) -> pd.DataFrame:
    """Every done job of `jobs`, its epochs in the order it trained them: the epochs it read from shared stages (the
    dense trajectory logs its epochs once, in the stage's `epochs.csv`) first, as many as its record
    counts beyond its own rows, then its own `epochs.csv`. So the dense job (no epochs of its own) shows
    the trajectory, magnitude and LTH their dense run before their own phases, and IMC its pretraining
    prefix; a stage that logs no epochs (Continuous Sparsification's search) adds none."""
    own = job_csv(jobs, "epochs.csv")
    epochs = records.groupby("job_id").epochs.max()
    frames = []
    for _, job in jobs[jobs.state == "done"].iterrows():
        rows = own[own.job_id == job.job_id] if not own.empty else own
        missing = int(epochs.get(job.job_id, 0)) - len(rows)
        shared = [pd.read_csv(path) for path in (folder / "epochs.csv" for folder in _stage_folders(Path(job.folder)))
                  if path.exists() and path.stat().st_size]
        if missing > 0 and shared:
            frames.append(pd.concat(shared, ignore_index=True).head(missing).assign(job_id=job.job_id))
        frames.append(rows)
    frames = [frame for frame in frames if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _stage_folders(folder: Path) -> list[Path]:
    """The job's shared stage folders, as its provenance.json names them; for records written before
    provenance named them, from its spec (which needs its method's code and torch; none where the spec
    names a method or setting not known here)."""
    try:
        stages = read_json(folder / "provenance.json").get("stages")
    except (FileNotFoundError, CorruptFileError, AttributeError):
        stages = None
    if isinstance(stages, list) and all(isinstance(name, str) and "/" not in name and name not in (".", "..")
                                        for name in stages):
        return [folder.parent.parent / STAGES_FOLDER / name for name in stages]
    from bench.jobs import stage_folders  # here: records that predate provenance's stages

    try:
        return stage_folders(folder)
    except (BenchError, CorruptFileError, KeyError, TypeError, ValueError):
        return []


def first_trial_jobs(collection: Collection, dataset: str, arch: str) -> pd.DataFrame:
    """The jobs whose own files the per-layer density and training-curve figures read: both show the first
    trial's jobs, so a report of 10,000 jobs reads a few dozen files."""
    records = collection.records
    group = records[(records.dataset == dataset) & (records.arch == arch)]
    dense = group.method == BASELINE
    first_trials = {group[part].trial.min() for part in (dense, ~dense) if part.any()}
    return collection.jobs[collection.jobs.job_id.isin(group[group.trial.isin(first_trials)].job_id)]


def layer_density_figure(collection: Collection, dataset: str, arch: str, folder: Path) -> list[Path]:
    """Per-layer density of the first trial's jobs, from their `layers.csv`."""
    shown = first_trial_jobs(collection, dataset, arch)
    return figures.layer_density(collection.records, job_csv(shown, "layers.csv"), dataset, arch, folder)


def training_curves_figure(collection: Collection, dataset: str, arch: str, folder: Path) -> list[Path]:
    """Training curves of the first trial's jobs, their shared stages' epochs first (`epochs_with_stages`)."""
    shown = first_trial_jobs(collection, dataset, arch)
    return figures.training_curves(collection.records, epochs_with_stages(collection.records, shown), dataset, arch,
                                   folder)


def outside_plan(results: Path, collection: Collection) -> pd.DataFrame:
    """The job folders under `results` that the reported jobs do not include (listed, never dropped)."""
    named = set(collection.jobs.job_id)
    if all(path.name in named for path in (Path(results) / JOBS_FOLDER).glob("*/")):
        return collection.jobs.iloc[0:0]
    on_disk = collect(results).jobs
    return on_disk[~on_disk.job_id.isin(named)]


def with_live_states(collection: Collection, results: Path) -> Collection:
    """`collection` with each job whose status.json still says `running` in the state `bench.status` gives
    it: running while a process holds its lock or SLURM runs it; interrupted, cancelled or lost otherwise
    (a stopped run leaves `running` on disk)."""
    written_running = collection.jobs.state == RUNNING
    if written_running.any():
        names = list(collection.jobs.job_id[written_running])
        states = job_states(results, names)
        collection.jobs.loc[written_running, "state"] = [states[name].state for name in names]
    return collection


def outside_section(outside: pd.DataFrame) -> str:
    if outside.empty:
        return ""
    return ("\n## Job folders outside the reported jobs\n\nIn the results folder but not in the plan or grid "
            "reported here (`--all-jobs` reports them; their records are not in the tables):\n\n"
            + _job_list(outside, with_error=False) + "\n")


def write_report(collection: Collection, out: Path, title: str, description: str,
                 formats: tuple[str, ...], outside: pd.DataFrame | None = None, reference: str | None = None) -> Path:
    """Write the report's tables, figures and README.md into `out`. Inside a `bench.figure_saves.drawing`
    block the figures are drawn in forked children while this process writes the tables; the README,
    which links them, is written once they are all drawn."""
    records, jobs = collection.records, collection.jobs
    out.mkdir(parents=True, exist_ok=True)
    sections: list[str | Callable[[], str]] = []
    if not records.empty:
        folder = out / "figures"
        by_name = records.assign(method=records.base_method)  # these figures tell settings apart themselves
        estimates = lipschitz_estimates(by_name)
        groups = list(records.groupby(["dataset", "arch"]).groups)
        sparsity = {group: figure_saves.draw(figures.accuracy_vs_sparsity, records, *group, folder) for group in groups}
        forest = figure_saves.draw(paired_figure, records, reference, folder)
        drawn = {(dataset, arch): [sparsity[dataset, arch]] + [
            figure_saves.draw(function, data, dataset, arch, folder) for function, data in (
                (layer_density_figure, collection), (training_curves_figure, collection),
                (figures.accuracy_vs_density, records), (figures.cost_per_method, records))]
            for dataset, arch in groups}
        imc_figures = [figure_saves.draw(figures.spectrum, by_name, folder),
                       figure_saves.draw(figures.sensitivity, by_name, folder),
                       figure_saves.draw(figures.lipschitz, estimates, folder)]
        figure_saves.start()  # the longest first: then the tables, while the figures are drawn
        write_text(out / "records.csv", records.drop(columns=["extra"]).to_csv(index=False))
        for (dataset, arch, kind), summary in build_tables(records).items():
            markdown = write_table(summary, out / "tables" / f"{dataset}-{arch}-{kind}", formats)
            number = paper_table_number(TABLE_KINDS[kind][1], dataset)
            source = f"paper's Table {number}" if number else "no paper table for this dataset"
            sections.append(f"### {KIND_TITLES[kind]}: {dataset}, {arch} ({source})\n\n{markdown}\n")
        for dataset, arch in groups:
            by_sparsity, layers, curves, by_density, cost = drawn[dataset, arch]
            sections += [lambda drawings=(by_density, by_sparsity, layers, curves): "".join(map(figure_links, drawings)),
                         lambda cost=cost, name=f"{dataset} {arch}": figure_links(cost, lambda path: f"cost per method, {name}")]
        sections += paired_sections(records, forest, out, formats, reference)
        if not estimates.empty:
            sections.append(lipschitz_tables(estimates, out / "tables", formats))
        sections.append(lambda: "".join(figure_links(drawing, lambda path: path.stem) for drawing in imc_figures))
    figure_saves.finish()
    sections = [section if isinstance(section, str) else section().lstrip("\n") for section in sections]
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
{method_code_lines(jobs)}- cells: mean ± sample std over trials (n in its own column); accuracy in %; the paper's value in
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

{outside_section(outside if outside is not None else jobs.iloc[0:0])}
## Tables and figures

{chr(10).join(section for section in sections if section) or "No finished job yet."}
"""
    path = out / "README.md"
    write_text(path, readme)
    return path


PAIRED_INTRO = """## Paired differences between methods

All methods of one trial share the init, the data order and the augmentation, so each difference below is
taken trial by trial: a method's accuracy minus dense's (and minus {reference}'s) in the same trial, in
percentage points. Each cell is the mean difference and its 95% Student-t interval over the trials both
methods finished (n); "≠ 0" marks an interval that excludes 0. A trial that only one of the two finished
leaves the pair out and is listed; with n < 2 no interval exists. The ranking orders methods by mean
accuracy; a method's rank is 1 + the number of methods whose paired interval against it lies wholly above 0,
so the methods no interval separates share a rank. An iterative method (LTH) stands at a level with its
nearest round, where that round is within 0.05 of the level.
"""


def lipschitz_estimates(records: pd.DataFrame) -> pd.DataFrame:
    """Rows (dataset, arch, trial, p, delta, K and K's diagnostics) from records carrying a Lipschitz sweep."""
    rows = []
    for extra, dataset, arch, trial in zip(records.extra, records.dataset, records.arch, records.trial, strict=True):
        extra = extra if isinstance(extra, dict) else {}
        for estimate in extra.get("lipschitz_sweep", []):
            rows.append({"dataset": dataset, "arch": arch, "trial": trial,
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
    if args.from_records is None:
        return report(args, Path(args.results))
    archive = Path(args.from_records)
    args.out = args.out or str(archive.parent)
    with tempfile.TemporaryDirectory(prefix="prunebench-records-") as unpacked:
        records_archive.unpack(archive, Path(unpacked))
        return report(args, Path(unpacked), shown_as=f"the records unpacked from `{archive}`")


def report(args: argparse.Namespace, results: Path, shown_as: str | None = None) -> int:
    """Write the report that `args` asks for, from the job folders under `results` (named `shown_as` in
    the report's heading: a records archive is unpacked into a temporary folder no reader can find)."""
    where = shown_as or f"`{results}`"
    formats = tuple(item.strip() for item in args.format.split(",") if item.strip())
    if args.figure_workers is not None and args.figure_workers < 1:
        raise BenchError(f"--figure-workers {args.figure_workers} is not valid; accepted: an integer >= 1")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise BenchError(f"unknown format(s) {unknown}; accepted: {', '.join(FORMATS)}")
    figure_formats = figure_saves.figure_formats(args.figure_formats)
    if not (results / "jobs").is_dir():
        raise BenchError(f"no job folders under {results / 'jobs'}; run `python -m bench.run` first or pass --results DIR")
    planned = None if args.all_jobs or args.grid else recorded_jobs(results)
    if args.all_jobs or (args.grid is None and planned is None):
        collection, title = collect(results), "all jobs"
        description = f"Every job under {where}" + ("." if args.all_jobs else
                                                          f" (no {plan_path(results).name}: no bench.run recorded a plan here).")
        out = Path(args.out or ("reports/all" if args.all_jobs else results / "report"))
    elif planned is not None:
        collection, title = collect(results, planned), f"the plan run into {where}"
        description = f"The jobs that `bench.run` planned into {where} ({plan_path(results).name}):\n\n" \
            + describe_runs(results)
        out = Path(args.out or results / "report")
    else:
        grid = load_grid(args.grid)
        collection, title, description = collect(results, grid.plan()), f"grid `{grid.name}`", grid.description
        out = Path(args.out or f"reports/{grid.name}")
    collection = with_live_states(collection, results)
    if args.reference is not None and not collection.records.empty and args.reference not in set(collection.records.method):
        raise BenchError(f"--reference {args.reference!r} has no finished job here; methods with records: "
                         f"{', '.join(sorted(set(collection.records.method)))}")
    inside_results = out.absolute().is_relative_to(results.absolute())
    check_tree(out, results if inside_results else out)  # no write follows a link out (a figure, the folder)
    with figure_saves.drawing(args.figure_workers, figure_formats):
        path = write_report(collection, out, title, description, formats, outside_plan(results, collection),
                            args.reference)
    print(f"wrote {path} ({len(collection.records)} records from {len(collection.jobs)} jobs)")
    if args.pack_records:
        count = records_archive.pack(results, out / records_archive.ARCHIVE_NAME, collection.jobs.job_id)
        print(f"packed the records of {count} jobs into {out / records_archive.ARCHIVE_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
