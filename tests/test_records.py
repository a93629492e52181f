"""A report's packed records: the report rebuilds from them alone, and a run resumes from them.

A tiny real grid (dense and magnitude on 300 digits, 1 epoch) is run, reported with `--pack-records`,
and the results folder deleted: `bench.report --from-records` writes the same tables. Only dense's
records are then unpacked into a fresh folder and the grid rerun: dense is skipped (its files are
byte-identical), magnitude trains. Hostile archives are refused member by member before any write.
"""

import io
import shutil
import tarfile

import pytest

from bench import records
from bench.errors import BenchError
from bench.report import main as report_main
from bench.run import main as run_main
from tests.conftest import TINY_ARCH

GRID = ["--methods", "dense,magnitude", "--arch", TINY_ARCH, "--dataset", "digits@300", "--epochs", "1",
        "--sparsity", "0.5", "--device", "cpu"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed")
    results, out = root / "results", root / "report"
    assert run_main([*GRID, "--results", str(results)]) == 0
    assert report_main(["--results", str(results), "--out", str(out), "--pack-records"]) == 0
    return results, out


def test_the_report_rebuilds_from_the_packed_records_alone(packed, tmp_path):
    results, out = packed
    archive = tmp_path / "copy" / records.ARCHIVE_NAME
    archive.parent.mkdir()
    shutil.copy(out / records.ARCHIVE_NAME, archive)
    moved = tmp_path / "moved-away"
    shutil.copytree(results, moved)
    shutil.rmtree(results)
    try:
        assert report_main(["--from-records", str(archive)]) == 0
        name = "digits@300-" + TINY_ARCH + "-best.csv"
        assert (archive.parent / "tables" / name).read_text() == (out / "tables" / name).read_text()
        assert (archive.parent / "records.csv").read_text() == (out / "records.csv").read_text()
        heading = (archive.parent / "README.md").read_text().splitlines()[0]
        assert heading == f"# Report: the plan run into the records unpacked from `{archive}`"  # not a temp folder
    finally:
        shutil.copytree(moved, results)


def test_packing_is_deterministic_and_holds_no_checkpoint(packed, tmp_path):
    results, out = packed
    again = tmp_path / records.ARCHIVE_NAME
    records.pack(results, again)
    assert again.read_bytes() == (out / records.ARCHIVE_NAME).read_bytes()
    with tarfile.open(again) as tar:
        names = tar.getnames()
    assert "plan.json" in names and all(name.split("/")[-1] in records.RECORD_FILES + ("plan.json",) for name in names)
    assert sum(name.endswith("metrics.json") for name in names) == 2


def test_a_lost_run_resumes_from_the_records_skipping_finished_jobs(packed, tmp_path):
    results, _ = packed
    dense = next(folder.name for folder in (results / "jobs").iterdir() if folder.name.startswith("dense-"))
    archive = tmp_path / records.ARCHIVE_NAME
    assert records.pack(results, archive, job_ids=[dense]) == 1
    fresh = tmp_path / "fresh"
    assert records.unpack(archive, fresh) == (1, 0)
    before = (fresh / "jobs" / dense / "status.json").read_bytes()
    assert run_main([*GRID, "--results", str(fresh)]) == 0
    assert (fresh / "jobs" / dense / "status.json").read_bytes() == before  # skipped, not retrained
    assert not (fresh / "jobs" / dense / "ckpt").exists()
    magnitude = [folder for folder in (fresh / "jobs").iterdir() if folder.name.startswith("magnitude-")]
    assert len(magnitude) == 1 and (magnitude[0] / "metrics.json").exists()
    assert records.unpack(archive, fresh) == (0, 1)  # a finished job is never overwritten


def hostile(tmp_path, name, kind=tarfile.REGTYPE, link=""):
    archive = tmp_path / "hostile.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        data = b"{}"
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return archive


@pytest.mark.parametrize(("name", "kind", "link"), [
    ("jobs/../../victim/spec.json", tarfile.REGTYPE, ""),
    ("jobs/../spec.json", tarfile.REGTYPE, ""),
    ("/etc/victim", tarfile.REGTYPE, ""),
    ("jobs/x/spec.json", tarfile.SYMTYPE, "/etc/passwd"),
    ("jobs/x/spec.json", tarfile.LNKTYPE, "plan.json"),
    ("jobs/x/ckpt.pt", tarfile.REGTYPE, ""),
])
def test_a_hostile_archive_is_refused_before_any_write(tmp_path, name, kind, link):
    target = tmp_path / "results"
    with pytest.raises(BenchError, match="is not a record file; accepted"):
        records.unpack(hostile(tmp_path, name, kind, link), target)
    assert not target.exists()


def test_unpacking_never_writes_through_a_link_out_of_the_results_folder(packed, tmp_path):
    from bench.safe_paths import LinkOutError

    results, _ = packed
    archive = tmp_path / records.ARCHIVE_NAME
    records.pack(results, archive)
    victim = tmp_path / "victim"
    victim.mkdir()
    target = tmp_path / "target"
    (target / "jobs").mkdir(parents=True)
    dense = next(folder.name for folder in (results / "jobs").iterdir() if folder.name.startswith("dense-"))
    (target / "jobs" / dense).symlink_to(victim)
    with pytest.raises(LinkOutError, match="outside"):
        records.unpack(archive, target)
    assert list(victim.iterdir()) == []
