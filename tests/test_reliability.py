"""Results that survive anything: each class of issue 10, reproduced on real files and processes.

1. no code runs from a results folder (crafted checkpoint, snapshot, stage, Imagenet32 batch);
2. a finished result is never silently lost (missing/unreadable metrics.json, torn files);
3. one run per job (per-job flock; two `bench.run` at once; local workers die with their parent);
4. errors before work (one line, exit 2, no job folder written);
5. the data cache and checkpoints are checked (file fingerprints, checksums);
6. the report accounts for every job of the plan (a failed analysis blocks its dependents);
8. small ones (quoted checkout path, links out of a job folder, one-class data, umask, threads).
Class 7 (SLURM requests no node can meet) is in tests/slurm/test_reliability_slurm.py.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import run as bench_run
from bench import status as bench_status
from bench.atomic import load_checked, save_checked, write_json
from bench.data import DataSettings, load_dataset
from bench.data.sources import _read_batch_file
from bench.errors import BenchError
from bench.executors import run_inline
from bench.grid import load_grid
from bench.jobs import run_job
from bench.report import main as report_main
from bench.slurm.executor import SlurmSettings, slurm_executor
from bench.slurm.queue import queue_reason
from bench.slurm.tasks import describe_resume
from bench.spec import JobSpec, RunSettings
from bench.stages import StageSpec, obtain
from bench.store import CORRUPT, DONE, FAILED, job_dir, job_lock, read_status, write_spec
from bench.tracking import job_states
from bench.train import EpochLog, Trainer, TrainSettings
from bench.trajectory import trajectory_stage
from tests.conftest import TINY_ARCH, run_spec

REPO_ROOT = Path(__file__).resolve().parents[1]


class CreatesFile:
    """Unpickling this object creates `path` (what a crafted checkpoint would do, harmlessly)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def dense(**changes) -> JobSpec:
    return JobSpec(**({"method": "dense", "dataset": "digits@300", "arch": TINY_ARCH, "train": {"epochs": 2}} | changes))


def dense_run(results: Path, job: JobSpec) -> Path:
    """The stage folder where a dense job's run trains (`bench.trajectory`)."""
    return trajectory_stage(job, TrainSettings(**job.train)).folder(results)


def epochs_rows(folder: Path) -> list[tuple[str, int]]:
    with (folder / "epochs.csv").open(newline="") as handle:
        return [(row["phase"], int(row["epoch"])) for row in csv.DictReader(handle)]


def bench_command(results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.run", "--dataset", "digits@300", "--arch", TINY_ARCH, "--epochs", "2",
            "--device", "cpu", "--results", str(results), *extra]


# --- 1. no code runs from a results folder ----------------------------------------------------------


def test_crafted_checkpoint_never_runs_its_code_and_the_phase_restarts(tmp_path, capsys):
    marker = tmp_path / "created-by-unpickling"
    job = job_dir(tmp_path, dense())
    (job / "ckpt").mkdir(parents=True)
    torch.save({"model": CreatesFile(marker), "complete": True}, job / "ckpt" / "train.pt")
    print(describe_resume(job))  # the SLURM log line reads the checkpoints too
    folder = dense_run(tmp_path, dense())
    (folder / "ckpt").mkdir(parents=True)
    torch.save({"model": CreatesFile(marker), "complete": True}, folder / "ckpt" / "train.pt")

    status = run_spec(tmp_path, dense())

    assert not marker.exists()
    assert status["state"] == DONE
    assert (folder / "ckpt" / "train.pt.corrupt").exists()
    err = capsys.readouterr().err
    assert "train.pt is torn or holds more than tensors and numbers" in err and "restarting phase 'train'" in err
    assert epochs_rows(folder) == [("train", 0), ("train", 1)]


def test_crafted_snapshot_and_stage_never_run_their_code(tmp_path):
    marker = tmp_path / "created-by-unpickling"
    snip = JobSpec(method="snip", dataset="digits@300", arch=TINY_ARCH, sparsity=0.5, train={"epochs": 1})
    folder = job_dir(tmp_path, snip)
    (folder / "ckpt").mkdir(parents=True)
    torch.save({"masks": CreatesFile(marker), "scoring_s": 0.0}, folder / "ckpt" / "init_masks.snapshot.pt")
    assert run_spec(tmp_path, snip)["state"] == DONE
    assert not marker.exists()

    stage = StageSpec("probe", {"what": "test"})
    first = obtain(tmp_path, stage, lambda _: {"value": torch.ones(2), "seconds": 0.0})
    torch.save({"value": CreatesFile(marker), "seconds": 0.0}, first.folder / "result.pt")
    again = obtain(tmp_path, stage, lambda _: {"value": torch.zeros(2), "seconds": 0.0})
    assert not marker.exists()
    assert again.computed_here and torch.equal(again.value["value"], torch.zeros(2))


def test_imagenet32_batches_are_read_with_a_restricted_unpickler(tmp_path):
    marker = tmp_path / "created-by-unpickling"
    good = tmp_path / "train_data_batch_1"
    good.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2], "mean": np.ones(3)}))
    data, labels = _read_batch_file(good)
    assert data.shape == (2, 3072) and labels.tolist() == [1, 2]

    bad = tmp_path / "train_data_batch_2"
    bad.write_bytes(pickle.dumps({"data": CreatesFile(marker), "labels": [1]}))
    with pytest.raises(BenchError, match="train_data_batch_2 is not a downsampled-ImageNet batch.*refused"):
        _read_batch_file(bad)
    assert not marker.exists()


# --- 2. a finished result is never silently lost ----------------------------------------------------


def test_done_job_without_readable_metrics_is_corrupt_listed_and_rerun(tmp_path, capsys):
    job = dense()
    run_spec(tmp_path, job)
    folder = job_dir(tmp_path, job)
    (folder / "metrics.json").unlink()

    assert read_status(folder)["state"] == CORRUPT
    assert bench_status.main(["--results", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "1 corrupt" in shown and "metrics.json is missing" in shown

    (folder / "metrics.json").write_text('[{"torn": ')  # bench.report names it and keeps the row
    assert report_main(["--results", str(tmp_path), "--all-jobs", "--out", str(tmp_path / "report")]) == 0
    readme = (tmp_path / "report" / "README.md").read_text()
    assert f"`{job.job_id}` (corrupt)" in readme and "metrics.json is not valid JSON" in readme

    status = run_spec(tmp_path, job)  # resumes from its (complete) checkpoints: nothing is trained twice
    assert status["state"] == DONE and status["attempt"] == 2
    assert json.loads((folder / "metrics.json").read_text())[0]["epochs"] == 2
    assert epochs_rows(dense_run(tmp_path, job)) == [("train", 0), ("train", 1)]


def test_unreadable_job_files_are_named_and_do_not_stop_the_folder(tmp_path, capsys):
    good, bad = dense(), dense(trial=1)
    run_spec(tmp_path, good)
    run_spec(tmp_path, bad)
    (job_dir(tmp_path, bad) / "spec.json").write_text("{not json")
    (job_dir(tmp_path, bad) / "status.json").write_text("")
    (tmp_path / "jobs.jsonl").write_text('{"job_id": "x", "slurm_id": "1"}\n{"job_id": "y", "slu')

    assert report_main(["--results", str(tmp_path), "--all-jobs", "--out", str(tmp_path / "report")]) == 0
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "spec.json is not valid JSON" in readme and "1 done" in readme
    states = job_states(tmp_path, [good.job_id, bad.job_id], queue={})
    assert states[good.job_id].state == DONE
    assert states[bad.job_id].state == CORRUPT and "status.json is not valid JSON" in states[bad.job_id].reason
    assert "jobs.jsonl line 2 is not a submission record" in capsys.readouterr().err

    write_spec(tmp_path, bad, RunSettings(device="cpu", progress=False))  # the known spec is written again
    assert run_job(job_dir(tmp_path, bad) / "spec.json")["state"] == DONE


def test_torn_last_row_of_epochs_csv_is_dropped_when_the_phase_resumes(digits_device, tmp_path):
    def trainer(folder: Path) -> Trainer:
        return Trainer(digits_device, 0, folder / "ckpt", EpochLog(folder / "epochs.csv"), progress=False)

    from bench.models import ModelInput, build_model

    def model():
        return build_model(TINY_ARCH, ModelInput(1, 10, 8), seed=1)

    settings = TrainSettings(epochs=3, batch_size=200)

    def stop_after_one(epoch, net, masks):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path).train(model(), "p", settings, on_epoch_end=stop_after_one)
    with (tmp_path / "epochs.csv").open("a") as handle:
        handle.write("p,1,0.1,2.3")  # a crash in the middle of an append
    trainer(tmp_path).train(model(), "p", settings)
    assert epochs_rows(tmp_path) == [("p", 0), ("p", 1), ("p", 2)]


# --- 3. one run per job ------------------------------------------------------------------------------


def test_a_held_job_is_skipped_and_status_tells_it_from_an_interrupted_one(tmp_path, capsys):
    job = dense()
    path = write_spec(tmp_path, job, RunSettings(device="cpu", progress=False))
    folder = path.parent
    write_json(folder / "status.json", {"state": "running", "attempt": 1})
    with job_lock(folder) as holder:
        assert holder is None
        assert run_job(path)["held_by"] == f"pid {os.getpid()} on {os.uname().nodename}"
        state = job_states(tmp_path, [job.job_id], queue={})[job.job_id]
        assert state.state == "running" and state.reason.startswith(f"held by pid {os.getpid()}")
        outcome = run_inline(load_grid_plan(job), tmp_path, RunSettings(device="cpu", progress=False), echo=print)
        assert job.job_id in outcome.held and outcome.failed == 0
    assert "held by pid" in capsys.readouterr().out
    assert not (folder / "epochs.csv").exists()
    assert job_states(tmp_path, [job.job_id], queue={})[job.job_id].state == "interrupted"


def load_grid_plan(spec: JobSpec):
    from bench.grid import plan_jobs

    return plan_jobs([spec])


def test_two_runs_started_together_train_each_job_once(tmp_path):
    results = tmp_path / "results"
    command = bench_command(results, "--methods", "dense,magnitude,snip", "--sparsity", "0.5,0.7")
    environment = os.environ | {"OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    folders = sorted((results / "jobs").iterdir())
    assert len(folders) == 5  # dense + (magnitude, snip) x 2 sparsities
    for folder in folders:
        status = json.loads((folder / "status.json").read_text())
        assert status["state"] == DONE and status["attempt"] == 1, folder.name
    logs = [path.parent for path in results.glob("**/epochs.csv")]
    assert len(logs) == 5  # the shared dense run (dense, magnitude's training), 2 fine-tunings, 2 snip jobs
    for folder in logs:
        rows = epochs_rows(folder)
        assert len(rows) == len(set(rows)), f"{folder.name}: an epoch was written twice: {rows}"


def test_local_workers_end_when_bench_run_dies(tmp_path):
    results = tmp_path / "results"
    command = bench_command(results, "--methods", "dense", "--epochs", "400", "--executor", "local",
                            "--workers", "1")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=os.environ | {"OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = None
    deadline = time.time() + 120
    while time.time() < deadline:
        locks = list((results / "jobs").glob("*/lock")) if (results / "jobs").exists() else []
        if locks and locks[0].read_text().strip() and list(results.glob("stages/*/epochs.csv")):
            lock = locks[0]
            break
        time.sleep(0.2)
    assert lock is not None, "the worker never started its job"
    worker = int(lock.read_text().split()[1])
    assert worker != process.pid
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.time() + 30
    while time.time() < deadline and _alive(worker):
        time.sleep(0.2)
    alive = _alive(worker)
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "the local worker kept training after bench.run was killed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")


# --- 4. errors before work ---------------------------------------------------------------------------


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "imagefolder", "--data-root", "/nonexistent/images"], "data root /nonexistent/images"),
    (["--dataset", "digits@5000"], "asks for 5000 training samples but digits has 1438"),
    (["--device", "cuda:7"], "cuda"),
    (["--trials", "0"], "trials = 0 (or --trials); accepted: an integer >= 1"),
])
def test_bad_flags_are_one_line_before_any_job_folder(flags, message, tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["--methods", "dense", "--arch", TINY_ARCH, "--epochs", "1", "--results", str(results), *flags]
    if "--dataset" not in flags:
        argv += ["--dataset", "digits@300"]
    assert bench_run.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not results.exists()


@pytest.mark.parametrize("body, message", [
    ('methods = "dense"', "methods = 'dense' is a string; accepted: a list such as ['dense']"),
    ('methods = ["dense"]\n[train]\nepochs = 1.5', "setting epochs = 1.5 is not an integer"),
    ('methods = ["dense"]\ntrials = 2.0', "trials = 2.0"),
])
def test_grid_values_of_the_wrong_type_are_refused(body, message, tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(f'datasets = ["digits@300"]\narchs = ["{TINY_ARCH}"]\n{body}\n')
    results = tmp_path / "results"
    assert bench_run.main(["--grid", str(grid), "--results", str(results)]) == 2
    assert message in capsys.readouterr().err and not results.exists()


def test_results_must_be_a_writable_folder(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    argv = ["--methods", "dense", "--dataset", "digits@300", "--arch", TINY_ARCH, "--epochs", "1"]
    assert bench_run.main([*argv, "--results", str(not_a_folder / "results")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_a_setup_failure_is_retried_without_the_flag_and_a_kept_failure_says_how(tmp_path, capsys):
    job = dense(dataset="imagefolder")
    missing = RunSettings(device="cpu", data=DataSettings(data_root=str(tmp_path / "nowhere")), progress=False)
    status = run_job(write_spec(tmp_path, job, missing))
    assert status["state"] == FAILED and status["setup_failure"]
    images = _image_folder(tmp_path / "images", classes=2, per_class=6)
    fixed = RunSettings(device="cpu", data=DataSettings(data_root=str(images), cache_dir=str(tmp_path / "cache")),
                        progress=False)
    assert run_job(write_spec(tmp_path, job, fixed))["state"] == DONE  # no retry_failed needed

    diverged = dense(train={"epochs": 1, "lr": 1e12})
    run_spec(tmp_path, diverged)
    capsys.readouterr()
    run_inline(load_grid_plan(diverged), tmp_path, RunSettings(device="cpu", progress=False))
    shown = capsys.readouterr().out
    assert "kept as failed (diverged: training loss became" in shown and "--retry-failed reruns it" in shown


# --- 5. the data cache and checkpoints are checked -----------------------------------------------------


def _image_folder(root: Path, classes: int, per_class: int, test_per_class: int = 2) -> Path:
    from PIL import Image

    generator = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for index in range(classes):
            folder = root / split / f"class{index}"
            folder.mkdir(parents=True, exist_ok=True)
            for item in range(count):
                pixels = generator.integers(0, 255, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{item}.png")
    return root


def test_adding_an_image_or_a_class_rebuilds_the_cache(tmp_path):
    root = _image_folder(tmp_path / "images", classes=2, per_class=3)
    settings = DataSettings(data_root=str(root), cache_dir=str(tmp_path / "cache"), image_size=8)
    assert load_dataset("imagefolder", settings).train_labels.numel() == 6
    _image_folder(root, classes=2, per_class=4)
    assert load_dataset("imagefolder", settings).train_labels.numel() == 8
    _image_folder(root, classes=3, per_class=4)
    assert load_dataset("imagefolder", settings).num_classes == 3
    assert len(list((tmp_path / "cache").glob("imagefolder-*.pt"))) == 3


def test_a_cache_file_that_fails_its_checksum_is_rebuilt(tmp_path, capsys):
    root = _image_folder(tmp_path / "images", classes=2, per_class=3)
    settings = DataSettings(data_root=str(root), cache_dir=str(tmp_path / "cache"), image_size=8)
    first = load_dataset("imagefolder", settings)
    cache = next((tmp_path / "cache").glob("imagefolder-*.pt"))
    raw = bytearray(cache.read_bytes())
    raw[-100] ^= 0xFF
    cache.write_bytes(bytes(raw))
    again = load_dataset("imagefolder", settings)
    assert "fails its checksum" in capsys.readouterr().err
    assert torch.equal(first.train_images, again.train_images)
    load_checked(cache)  # rebuilt: passes again


def test_a_corrupt_checkpoint_resumes_from_the_previous_good_one(digits_device, tmp_path, capsys):
    from bench.models import ModelInput, build_model

    settings = TrainSettings(epochs=4, batch_size=200)

    def run(folder: Path, hook=None):
        model = build_model(TINY_ARCH, ModelInput(1, 10, 8), seed=1)
        trainer = Trainer(digits_device, 0, folder / "ckpt", EpochLog(folder / "epochs.csv"), progress=False)
        return trainer.train(model, "p", settings, on_epoch_end=hook)

    expected = run(tmp_path / "straight").evaluation

    def stop(epoch, net, masks):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "broken", stop)
    latest = tmp_path / "broken" / "ckpt" / "p.pt"
    assert load_checked(latest)["next_epoch"] == 2
    raw = bytearray(latest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    latest.write_bytes(bytes(raw))
    resumed = run(tmp_path / "broken").evaluation
    assert "fails its checksum" in capsys.readouterr().err
    assert resumed == expected
    assert epochs_rows(tmp_path / "broken") == [("p", epoch) for epoch in range(4)]


# --- 6. the report accounts for every job of the plan ----------------------------------------------------


def test_a_failed_analysis_is_reported_and_blocks_its_dependents(tmp_path):
    grid = tmp_path / "found.toml"
    grid.write_text(f'methods = ["imc-reinit", "magnitude"]\ndatasets = ["digits@300"]\narchs = ["{TINY_ARCH}"]\n'
                    'sparsities = ["found"]\nquick = true\nneeds_analysis = ["imc-reinit"]\n[train]\nepochs = 1\n')
    plan = load_grid(str(grid)).plan()
    analysis = plan[0]
    assert analysis.spec.method == "imc-analysis" and all(job.after == (analysis.job_id,) for job in plan[1:])
    run = RunSettings(device="cpu", progress=False)
    for job in plan:
        write_spec(tmp_path, job.spec, run)
    write_json(job_dir(tmp_path, analysis.spec) / "status.json", {"state": FAILED, "error": "RuntimeError: boom"})

    assert report_main(["--results", str(tmp_path), "--grid", str(grid), "--out", str(tmp_path / "report")]) == 0
    readme = (tmp_path / "report" / "README.md").read_text()
    failed = readme.split("## Failed jobs")[1].split("##")[0]
    blocked = readme.split("## Jobs blocked by a failed job")[1].split("##")[0]
    assert f"`{analysis.job_id}` (failed): RuntimeError: boom" in failed
    for job in plan[1:]:
        assert f"`{job.job_id}` (blocked): blocked by {analysis.job_id}, which is failed" in blocked
    assert f"jobs: {len(plan)} in all" in readme


# --- 8. small ones -------------------------------------------------------------------------------------


def test_the_checkout_path_is_quoted_in_the_sbatch_setup(tmp_path, monkeypatch):
    import bench.slurm.executor as slurm_executor_module

    if slurm_executor_module.shutil.which("sbatch") is None:
        pytest.skip("needs sbatch on PATH (tests/slurm/start-cluster.sh)")
    spaced = tmp_path / "my checkout"
    spaced.mkdir()
    monkeypatch.setattr(slurm_executor_module, "REPO_ROOT", spaced)
    executor = slurm_executor(tmp_path / "results", SlurmSettings())
    setup = executor._executor.parameters["setup"]
    script = "\n".join([*setup, "pwd", 'echo "$PYTHONPATH"'])
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=os.environ | {"PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(spaced), str(spaced)]


def test_a_link_out_of_the_job_folder_is_refused(tmp_path):
    job = dense()
    outside = tmp_path / "outside.csv"
    outside.write_text("precious\n")
    folder = write_spec(tmp_path, job, RunSettings(device="cpu", progress=False)).parent
    (folder / "epochs.csv").symlink_to(outside)
    status = run_job(folder / "spec.json")
    assert status["state"] == FAILED and "leads through a link to" in status["error"] and "outside" in status["error"]
    assert outside.read_text() == "precious\n"


def test_a_one_class_dataset_is_refused(tmp_path):
    root = _image_folder(tmp_path / "images", classes=1, per_class=3)
    with pytest.raises(BenchError, match="1 class\\(es\\) in its training set; accepted: at least 2"):
        load_dataset("imagefolder", DataSettings(data_root=str(root), cache_dir=str(tmp_path / "cache")))


def test_files_follow_the_umask_and_provenance_records_threads(tmp_path):
    previous = os.umask(0o022)
    try:
        run_spec(tmp_path, dense())
        save_checked(tmp_path / "x.pt", {"a": 1})
    finally:
        os.umask(previous)
    folder = job_dir(tmp_path, dense())
    checkpoint = dense_run(tmp_path, dense()) / "ckpt" / "train.pt"
    for path in (folder / "metrics.json", folder / "status.json", checkpoint, tmp_path / "x.pt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["threads"] == torch.get_num_threads()
    assert report_main(["--results", str(tmp_path), "--all-jobs", "--out", str(tmp_path / "report")]) == 0
    assert f"CPU threads (torch): {torch.get_num_threads()}" in (tmp_path / "report" / "README.md").read_text()


def test_queue_reasons_are_given_in_words():
    assert "exceeds what the partition allows" in queue_reason("PartitionConfig")
    assert queue_reason("SomethingNew") == "SomethingNew"

