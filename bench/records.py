"""A report's raw records, packed beside it: every finished or failed job's small files, compressed.

`python -m bench.records pack --results DIR --out reports/NAME/records.tar.xz` packs `plan.json` and,
of each done or failed job, `spec.json`, `status.json`, `metrics.json`, `epochs.csv`, `layers.csv` and
`provenance.json` (never checkpoints, snapshots or stages). `python -m bench.records unpack ARCHIVE
--results DIR` lays them out as a results folder again, so that

- `bench.report --results DIR` rebuilds the report from the repository alone
  (`bench.report --from-records ARCHIVE` does both steps), and
- `bench.run --results DIR` with the same grid resumes a run whose machine was lost: the finished jobs
  are done and skipped, only the rest train.

Synaptic-Flow ships its per-seed results the same way. The archive is deterministic (sorted members,
zero times and owners), so packing the same records twice gives the same bytes and git stores no
churn. An archive is untrusted input like any results folder: unpacking takes regular files with the
names above only (anything else, a link, an absolute path or `..` is refused in one line naming the
member), never overwrites a finished job, and writes atomically.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path

from bench.atomic import atomic_write, read_file
from bench.cli import guarded
from bench.errors import BenchError
from bench.plans import PLAN_FILE
from bench.safe_paths import check_tree
from bench.store import DONE, FAILED, JOBS_FOLDER, read_status

RECORD_FILES = ("spec.json", "status.json", "metrics.json", "epochs.csv", "layers.csv", "provenance.json")
ARCHIVE_NAME = "records.tar.xz"
MEMBER = re.compile(rf"^(?:{re.escape(PLAN_FILE)}|{JOBS_FOLDER}/(?!\.\.?/)[A-Za-z0-9@._+=-]+/"
                    rf"(?:{'|'.join(re.escape(name) for name in RECORD_FILES)}))$")


def packed_files(results: Path, job_ids: Iterable[str] | None = None) -> list[tuple[str, Path]]:
    """(member name, path) of what `pack` takes: plan.json and the record files of done/failed jobs."""
    results = Path(results)
    plan = results / PLAN_FILE
    members = [(PLAN_FILE, plan)] if plan.is_file() and not plan.is_symlink() else []
    folders = sorted((results / JOBS_FOLDER).iterdir()) if (results / JOBS_FOLDER).is_dir() else []
    wanted = None if job_ids is None else set(job_ids)
    for folder in folders:
        if folder.is_symlink() or not folder.is_dir() or (wanted is not None and folder.name not in wanted):
            continue
        if read_status(folder)["state"] not in (DONE, FAILED):
            continue
        for name in RECORD_FILES:
            path = folder / name
            if path.is_file() and not path.is_symlink():
                members.append((f"{JOBS_FOLDER}/{folder.name}/{name}", path))
    return members


def pack(results: Path, archive: Path, job_ids: Iterable[str] | None = None) -> int:
    """Write the records of `results` (or of `job_ids` only) to `archive`; return the number of jobs packed."""
    members = packed_files(results, job_ids)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz", preset=9) as tar:
        for name, path in members:
            data = read_file(path)
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    atomic_write(archive, lambda handle: handle.write(buffer.getvalue()))
    return len({name.split("/")[1] for name, _ in members if name.startswith(f"{JOBS_FOLDER}/")})


def unpack(archive: Path, results: Path) -> tuple[int, int]:
    """Lay the archive's records out under `results`; return (jobs written, finished jobs kept as they were).

    Every member is checked before anything is written."""
    archive, results = Path(archive), Path(results)
    if not archive.is_file():
        raise BenchError(f"{archive} is not a records archive file (expected e.g. reports/NAME/{ARCHIVE_NAME})")
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = tar.getmembers()
            for member in members:
                if not member.isfile() or not MEMBER.match(member.name):
                    raise BenchError(f"{archive}: member {member.name!r} is not a record file; accepted: regular "
                                     f"files {PLAN_FILE} and {JOBS_FOLDER}/<job id>/{{{','.join(RECORD_FILES)}}}")
            contents = {member.name: tar.extractfile(member).read() for member in members}
    except (tarfile.TarError, EOFError, OSError) as error:
        raise BenchError(f"{archive} is not a readable records archive ({error})") from None
    if results.exists():
        check_tree(results, results)  # nothing is written through a link that leads out of the folder
    written, kept = set(), set()
    for name, data in sorted(contents.items()):
        target = results / name
        if name == PLAN_FILE:
            if not target.exists():
                atomic_write(target, lambda handle, data=data: handle.write(data))
            continue
        job_id = name.split("/")[1]
        if job_id in kept or (job_id not in written and read_status(target.parent)["state"] == DONE):
            kept.add(job_id)
            continue
        atomic_write(target, lambda handle, data=data: handle.write(data))
        written.add(job_id)
    return len(written), len(kept)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.records", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack_parser = commands.add_parser("pack", help="pack a results folder's records into an archive")
    pack_parser.add_argument("--results", default="results", help="results folder (default: results/)")
    pack_parser.add_argument("--out", required=True, help=f"archive to write, e.g. reports/NAME/{ARCHIVE_NAME}")
    unpack_parser = commands.add_parser("unpack", help="lay an archive's records out as a results folder")
    unpack_parser.add_argument("archive", help=f"a {ARCHIVE_NAME} written by `pack` or `bench.report --pack-records`")
    unpack_parser.add_argument("--results", required=True, help="results folder to write into (made if missing)")
    return parser


@guarded
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "pack":
        count = pack(Path(args.results), Path(args.out))
        print(f"packed the records of {count} jobs from {args.results} into {args.out}")
    else:
        written, kept = unpack(Path(args.archive), Path(args.results))
        print(f"unpacked {written} jobs into {args.results}; {kept} finished jobs there were kept as they were")
    return 0


if __name__ == "__main__":
    sys.exit(main())
