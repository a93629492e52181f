"""Job ids (pinned hashes), the job directory, skip-if-done, failure records."""

import json
import re

import pytest

from bench.errors import BenchError
from bench.spec import JobSpec
from bench.store import DONE, FAILED, job_dir, read_status
from tests.conftest import TINY_ARCH, run_spec


def test_job_hashes_are_pinned_and_defaults_do_not_rename():
    dense = JobSpec(method="dense", dataset="cifar100", arch="resnet32", trial=2)
    assert dense.job_id == "dense-cifar100-resnet32-dense-t2-d7dbe1c294"
    same = JobSpec(method="dense", dataset="cifar100", arch="resnet32", trial=2, train={"epochs": 160})
    assert same.job_id == dense.job_id
    magnitude = JobSpec(method="magnitude", dataset="cifar100", arch="resnet32", trial=2, sparsity=0.5,
                        train={"epochs": 3}, hparams={"finetune_lr_scale": 0.1})
    assert magnitude.job_id == "magnitude-cifar100-resnet32-s0.5-t2-aacc103f96"
    assert JobSpec(method="magnitude", dataset="cifar100", arch="resnet32", trial=2, sparsity=0.5,
                   train={"epochs": 4}).job_id != magnitude.job_id
    assert JobSpec(method="dense", dataset="cifar100", arch="resnet32", trial=2,
                   train={"precision": "fp32"}).job_id == dense.job_id, "the default precision renames nothing"
    assert JobSpec(method="dense", dataset="cifar100", arch="resnet32", trial=2,
                   train={"precision": "bf16"}).job_id != dense.job_id, "bf16 is part of the job's identity"


def test_a_method_version_other_than_1_renames_its_jobs_and_version_1_renames_none(monkeypatch):
    """An author's version bump (here: set on the class, as the author's edit does) gives the method's jobs,
    and the jobs at "found" that take s* from the bumped analysis, new ids; version 1 is the pinned ids."""
    from methods.registry import found_provider, get_method

    magnitude = JobSpec(method="magnitude", dataset="cifar100", arch="resnet32", trial=2, sparsity=0.5,
                        train={"epochs": 3})
    at_found = JobSpec(method="magnitude", dataset="cifar100", arch="resnet32", trial=2, sparsity="found")
    pinned, found_id = magnitude.job_id, at_found.job_id
    assert pinned == "magnitude-cifar100-resnet32-s0.5-t2-aacc103f96" == magnitude.job_id_at(1)
    monkeypatch.setattr(get_method("magnitude"), "version", 2)
    assert magnitude.job_id != pinned and magnitude.job_id_at(1) == pinned and magnitude.job_id == magnitude.job_id_at(2)
    monkeypatch.setattr(get_method("magnitude"), "version", 1)
    assert at_found.job_id == found_id
    monkeypatch.setattr(found_provider(), "version", 2)
    assert at_found.job_id != found_id and magnitude.job_id == pinned


@pytest.mark.parametrize("attribute, value, says", [
    ("sparsity_mode", "sweep", "sparsity_mode = 'sweep'; accepted: levels, rounds, none"),
    ("version", 0, "version = 0; accepted: an integer >= 1"),
    ("takes_sparsity", False, "takes no sparsity (takes_sparsity = False) but declares sparsity_mode = 'levels'"),
])
def test_a_method_class_declaring_a_bad_mode_or_version_does_not_register(attribute, value, says):
    from methods.base import Method
    from methods.registry import METHODS, register

    class Declared(Method):
        def run(self, context):
            return []

    setattr(Declared, attribute, value)
    with pytest.raises(BenchError, match=f"method declared-probe.*{re.escape(says[:20])}") as raised:
        register("declared-probe")(Declared)
    assert says in str(raised.value) and "declared-probe" not in METHODS.names()


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, "half"])
def test_bad_sparsity_is_rejected_with_accepted_range(sparsity):
    with pytest.raises(BenchError, match=r"\[0, 1\)"):
        JobSpec(method="magnitude", dataset="digits", arch="resnet8", sparsity=sparsity)


def spec(**changes) -> JobSpec:
    values = dict(method="magnitude", dataset="digits@300", arch=TINY_ARCH, sparsity=0.5, train={"epochs": 1})
    return JobSpec(**(values | changes))


def test_job_directory_holds_every_record_file(tmp_path):
    status = run_spec(tmp_path, spec())
    assert status["state"] == DONE
    folder = job_dir(tmp_path, spec())
    names = {path.name for path in folder.iterdir()}
    assert names == {"spec.json", "status.json", "metrics.json", "epochs.csv", "layers.csv", "provenance.json", "ckpt",
                     "lock"}
    stored = json.loads((folder / "spec.json").read_text())
    assert stored["job_id"] == spec().job_id and stored["run"]["device"] == "cpu"
    records = json.loads((folder / "metrics.json").read_text())
    assert records[0]["achieved_sparsity"] == pytest.approx(0.5, abs=1e-4) and records[0]["epochs"] == 2
    assert "torch" in json.loads((folder / "provenance.json").read_text())
    layers = (folder / "layers.csv").read_text().splitlines()
    assert layers[0] == "round,layer,shape,weights,kept,sparsity" and len(layers) == 1 + 10


def test_finished_job_is_skipped_on_rerun(tmp_path):
    run_spec(tmp_path, spec())
    folder = job_dir(tmp_path, spec())
    before = (folder / "metrics.json").stat().st_mtime_ns
    status = run_spec(tmp_path, spec())
    assert status["state"] == DONE and status["attempt"] == 1
    assert (folder / "metrics.json").stat().st_mtime_ns == before


def test_diverged_job_is_recorded_as_failed_and_retried_only_on_request(tmp_path):
    bad = spec(train={"epochs": 1, "lr": 1e12})
    status = run_spec(tmp_path, bad)
    assert status["state"] == FAILED and status["error"].startswith("diverged: training loss became")
    assert run_spec(tmp_path, bad)["attempt"] == 1  # not retried
    assert run_spec(tmp_path, bad, retry_failed=True)["attempt"] == 2


def test_crash_records_reason_and_traceback_tail(tmp_path):
    bad = spec(hparams={"no_such_setting": 1})
    status = run_spec(tmp_path, bad)
    assert status["state"] == FAILED
    assert "unknown setting(s) ['no_such_setting'] for method magnitude; accepted: ['finetune_lr_scale']" in status["error"]
    assert "Traceback" in status["traceback"]
    assert read_status(job_dir(tmp_path, bad))["state"] == FAILED


def test_killed_job_resumes_to_the_same_numbers(tmp_path):
    """SIGKILL a real `bench.run` process mid fine-tuning, rerun it, compare with an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    job = spec(dataset="digits", train={"epochs": 4})
    run_spec(tmp_path / "uninterrupted", job)
    expected = json.loads((job_dir(tmp_path / "uninterrupted", job) / "metrics.json").read_text())[0]

    command = [sys.executable, "-m", "bench.run", "--methods", "magnitude", "--dataset", "digits", "--arch", TINY_ARCH,
               "--epochs", "4", "--sparsity", "0.5", "--device", "cpu", "--results", str(tmp_path / "killed")]
    folder = job_dir(tmp_path / "killed", job)
    # the same CPU threads as this process, which runs the uninterrupted job and the resumed one
    threads = str(torch.get_num_threads())
    process = subprocess.Popen(command, env=os.environ | {"OMP_NUM_THREADS": threads}, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        log = folder / "epochs.csv"
        if log.exists() and "finetune,0," in log.read_text():
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    assert read_status(folder)["state"] == "running" and not (folder / "metrics.json").exists()

    status = run_spec(tmp_path / "killed", job)
    assert status["state"] == DONE and status["attempt"] == 2
    resumed = json.loads((folder / "metrics.json").read_text())[0]
    assert resumed["accuracy"] == expected["accuracy"] and resumed["test_loss"] == expected["test_loss"]
    rows = (folder / "epochs.csv").read_text().splitlines()[1:]
    assert [row.split(",")[:2] for row in rows] == [["finetune", str(epoch)] for epoch in range(4)]
    dense_rows = next((tmp_path / "killed" / "stages").glob("dense-trajectory-*/epochs.csv")).read_text()
    assert [row.split(",")[:2] for row in dense_rows.splitlines()[1:]] == [["train", str(epoch)] for epoch in range(4)]
