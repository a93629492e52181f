"""The report from a fixture of job directories made here (done, failed and missing jobs).

Checks the numbers in the generated Markdown/CSV (mean, sample std, n, the best-sparsity choice, the
found-sparsity choice for an iterative method, the paper column) and that figures are written.
"""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from bench import figure_saves
from bench.atomic import write_json
from bench.collect import collect
from bench.report import main, write_report
from bench.spec import JobSpec
from bench.store import job_dir, job_lock

DATASET, ARCH = "cifar10@5k", "resnet20"


def record(spec: JobSpec, accuracy: float, sparsity: float, round: int = 0, epochs: int = 160, **extra) -> dict:
    return {
        "job_id": spec.job_id, "method": spec.method, "dataset": spec.dataset, "arch": spec.arch,
        "trial": spec.trial, "round": round, "requested_sparsity": None, "achieved_sparsity": sparsity,
        "density": 1 - sparsity, "compression": 1 / (1 - sparsity), "prunable_weights": 100, "kept_weights": 50,
        "total_parameters": 110, "flops": 1000 * (1 - sparsity), "dense_flops": 1000.0, "accuracy": accuracy,
        "top5": None, "test_loss": 1.0 - accuracy, "epochs": epochs, "runtime_s": 100.0 + 10 * round,
        "scoring_s": 1.0, "device": "cpu (test)", "extra": extra,
    }


def write_job(results: Path, spec: JobSpec, records: list[dict] | None, error: str | None = None) -> None:
    folder = job_dir(results, spec)
    write_json(folder / "spec.json", {"job_id": spec.job_id, "spec": spec.__dict__, "run": {}})
    write_json(folder / "provenance.json", {"git": {"sha": "0123456789abcdef"}, "stages": []})
    if records is None:
        write_json(folder / "status.json", {"state": "failed", "error": error})
    else:
        write_json(folder / "status.json", {"state": "done"})
        write_json(folder / "metrics.json", records)


def spec(method: str, trial: int, sparsity=None) -> JobSpec:
    return JobSpec(method=method, dataset=DATASET, arch=ARCH, trial=trial, sparsity=sparsity)


@pytest.fixture()
def fixture_results(tmp_path) -> tuple[Path, list[JobSpec]]:
    results = tmp_path / "results"
    specs = []

    def add(job_spec, records, error=None):
        specs.append(job_spec)
        write_job(results, job_spec, records, error)

    for trial, (dense_acc, s_star, imc_acc) in enumerate([(0.80, 0.40, 0.81), (0.82, 0.42, 0.79)]):
        job = spec("dense", trial)
        add(job, [record(job, dense_acc, 0.0)])
        job = spec("imc-reinit", trial)
        add(job, [record(job, imc_acc, s_star, spectrum_nodes=[-1.0, 0.5, 9.0], spectrum_weights=[0.3, 0.6, 0.1],
                         split={"upper": 9.0, "lower": 0.5, "gap": 8.5}, lipschitz=0.5)])
        job = spec("snip", trial, "found")
        add(job, [record(job, 0.70 + 0.04 * trial, s_star)])
        job = spec("snip", trial, 0.1)
        add(job, [record(job, 0.75 + 0.02 * trial, 0.1)])
        job = spec("snip", trial, 0.4)  # the paper's s* for cifar10@5k ResNet-20 (Table 8)
        add(job, [record(job, 0.73 + 0.02 * trial, 0.4)])
        job = spec("imc-reinit", trial, 0.4)
        add(job, [record(job, 0.77 + 0.02 * trial, 0.4)])
        job = spec("lth-rewind", trial, 0.5)  # one job, rounds at 1 - 0.9^r
        add(job, [record(job, 0.78 - 0.01 * r + 0.001 * trial, 1 - 0.9**r, round=r, epochs=160 * (r + 1))
                  for r in range(1, 7)])
    add(spec("grasp", 0, "found"), None, error="diverged: training loss became nan in phase 'train', epoch 3")
    specs.append(spec("synflow", 0, "found"))  # never ran: missing
    return results, specs


def test_tidy_table_has_one_row_per_job_and_round(fixture_results):
    results, specs = fixture_results
    collection = collect(results, specs)
    assert len(collection.records) == 2 * (1 + 1 + 1 + 1 + 1 + 1 + 6)
    assert list(collection.failed.method) == ["grasp"] and list(collection.missing.method) == ["synflow"]


def test_generated_tables_hold_the_right_numbers(fixture_results, tmp_path):
    results, specs = fixture_results
    out = tmp_path / "report"
    with figure_saves.drawing(2, figure_saves.figure_formats("png,pdf")):  # figures drawn in forked children
        write_report(collect(results, specs), out, "fixture", "a fixture", ("md", "tex", "csv"))
    found = pd.read_csv(out / "tables" / f"{DATASET}-{ARCH}-found.csv").set_index("method")
    assert found.loc["dense", "Accuracy mean"] == pytest.approx(81.0)
    assert found.loc["dense", "Accuracy std"] == pytest.approx(math.sqrt(2) * 1.0)  # sample std of 80, 82
    assert found.loc["dense", "Accuracy paper"] == pytest.approx(81.3)  # Table 8, Baseline, ResNet-20
    assert found.loc["snip", "Accuracy mean"] == pytest.approx(72.0)
    assert found.loc["snip", "Sparsity paper"] == pytest.approx(0.40)
    # LTH at its nearest round to each trial's s*: 0.40 -> round 5 (0.410); 0.42 -> round 5 as well
    assert found.loc["lth-rewind", "Sparsity mean"] == pytest.approx(1 - 0.9**5)
    assert found.loc["lth-rewind", "Epoch mean"] == 960
    assert found.loc["imc-reinit", "n"] == 2 and found.loc["imc-reinit", "Sparsity mean"] == pytest.approx(0.41)
    assert list(found.index) == ["dense", "snip", "lth-rewind", "imc-reinit"]  # the paper's row order

    best = pd.read_csv(out / "tables" / f"{DATASET}-{ARCH}-best.csv").set_index("method")
    assert best.loc["snip", "Sparsity mean"] == pytest.approx(0.1)  # 76% at 0.1 beats 72% at found
    assert best.loc["lth-rewind", "Sparsity mean"] == pytest.approx(0.1)  # round 1 has the highest accuracy
    assert best.loc["snip", "Accuracy paper"] == pytest.approx(74.7)  # Table 9, SNIP, ResNet-20

    at_paper = pd.read_csv(out / "tables" / f"{DATASET}-{ARCH}-paper.csv").set_index("method")
    assert list(at_paper.index) == ["dense", "snip", "lth-rewind", "imc-reinit"]
    assert at_paper.loc["snip", "Accuracy mean"] == pytest.approx(74.0)  # the 0.4 jobs, not found or 0.1
    assert at_paper.loc["imc-reinit", "Accuracy mean"] == pytest.approx(78.0)  # pruned at 0.4, not at s*
    assert at_paper.loc["imc-reinit", "Accuracy paper"] == pytest.approx(81.4)  # Table 8, IMC-Reinit
    assert at_paper.loc["lth-rewind", "Sparsity mean"] == pytest.approx(1 - 0.9**5)  # nearest round to 0.4
    assert at_paper.loc["dense", "Accuracy mean"] == pytest.approx(81.0)

    markdown = (out / "tables" / f"{DATASET}-{ARCH}-found.md").read_text()
    assert "| Baseline " in markdown and "81.0 ± 1.4 (paper 81.3)" in markdown
    assert (out / "tables" / f"{DATASET}-{ARCH}-found.tex").read_text().startswith("\\begin{tabular}")
    readme = (out / "README.md").read_text()
    assert "grasp" in readme and "diverged: training loss became nan" in readme
    assert "synflow" in readme.split("## Missing, corrupt or unfinished jobs")[1]
    assert "1 failed, 0 blocked by a failed job, 1 missing" in readme
    assert f"### Accuracy at the paper's sparsity: {DATASET}, {ARCH} (paper's Table 8)" in readme
    for name in (f"accuracy-vs-sparsity-{DATASET}-{ARCH}", f"cost-{DATASET}-{ARCH}", "imc-spectrum"):
        for suffix in (".png", ".pdf"):
            assert (out / "figures" / f"{name}{suffix}").stat().st_size > 1000
    assert f"![cost per method, {DATASET} {ARCH}](figures/cost-{DATASET}-{ARCH}.png)" in readme
    assert "![imc-spectrum](figures/imc-spectrum.png)" in readme and ".pdf)" not in readme


def test_found_sparsity_is_imc_s_star_not_its_paper_level_jobs():
    from bench.tables import found_sparsity_by_trial

    records = pd.DataFrame([
        {"method": "imc-reinit", "trial": 0, "level": "none", "achieved_sparsity": 2e-5},
        {"method": "imc-reinit", "trial": 0, "level": "0.4", "achieved_sparsity": 0.4},  # pruned at the paper's s*
    ])
    assert found_sparsity_by_trial(records) == {0: pytest.approx(2e-5)}


def test_a_job_left_running_on_disk_is_reported_as_bench_status_sees_it(fixture_results, tmp_path):
    """A stopped run leaves status.json at `running`: the report calls the job interrupted unless a live
    process holds its lock (held here, in this process, as a worker would)."""
    results, _ = fixture_results
    stopped, live = spec("synflow", 1, 0.4), spec("synflow", 2, 0.4)
    for job in (stopped, live):
        write_job(results, job, [])
        write_json(job_dir(results, job) / "status.json", {"state": "running"})
    out = tmp_path / "report"
    with job_lock(job_dir(results, live)) as holder:
        assert holder is None
        assert main(["--results", str(results), "--out", str(out), "--figure-workers", "1"]) == 0
    unfinished = (out / "README.md").read_text().split("## Missing, corrupt or unfinished jobs")[1]
    assert f"`{stopped.job_id}` (interrupted)" in unfinished
    assert f"`{live.job_id}` (running)" in unfinished


def test_report_cli_on_an_empty_results_folder_is_one_line(tmp_path, capsys):
    assert main(["--results", str(tmp_path)]) == 2
    assert "no job folders under" in capsys.readouterr().err


SUPPLEMENT = Path(__file__).resolve().parents[1].parent / "shared" / "paper" / "imc-supplementary.txt"


@pytest.mark.parametrize(("kind", "dataset", "arch", "method", "expected", "line"), [
    ("found", "cifar100", "resnet32", "lth-reinit", (0.27, 74.5, 640, 21296),
     "LTH+Reinitialization\t0.19\t72.5\t480\t11,926\t0.27\t74.5\t640\t21,296"),
    ("best", "imagenet-sub@10k", "resnet32", "grasp", (0.45, 24.8, 160, 6946),
     "GraSP\t0.10\t23.0\t160\t4,396\t0.45\t24.8\t160\t6,946"),
    ("found", "cifar100@5k", "resnet20", "imc-finetune", (0.13, 40.9, 160, 557),
     "IMC-FineTuning\t0.13\t40.9\t160\t557\t0.22\t42.4\t160\t704"),
])
def test_paper_transcription_matches_the_supplement(kind, dataset, arch, method, expected, line):
    from bench.paper import paper_row

    row = paper_row(kind, dataset, arch, method)
    assert (row["sparsity"], row["accuracy"], row["epochs"], row["runtime_s"]) == pytest.approx(expected)
    if SUPPLEMENT.exists():  # shared/ beside the repository: the line is in the supplement's text
        assert line in SUPPLEMENT.read_text()


def test_spec_json_fixture_round_trips():
    job = spec("snip", 1, "found")
    assert JobSpec.from_dict(json.loads(json.dumps(job.__dict__))) == job


def test_sensitivity_figure_from_imc_jobs_that_vary_a_setting(tmp_path):
    results = tmp_path / "results"
    specs = []
    for rewind_epoch, accuracy in ((2, 0.70), (5, 0.72), (10, 0.71)):
        job = JobSpec(method="imc-rewind", dataset=DATASET, arch=ARCH, hparams={"rewind_epoch": rewind_epoch})
        specs.append(job)
        write_job(results, job, [record(job, accuracy, 0.4)])
    out = tmp_path / "report"
    write_report(collect(results, specs), out, "sensitivity", "fixture", ("md",))
    figure = out / "figures" / "sensitivity-rewind_epoch.png"
    assert figure.stat().st_size > 1000
    assert "sensitivity-rewind_epoch.png" in (out / "README.md").read_text()
    assert not (out / "figures" / "sensitivity-lr.png").exists()  # lr did not vary


def test_a_report_of_every_job_reads_records_not_code(fixture_results, tmp_path):
    """`--all-jobs` takes each folder's spec under the id its spec.json names (a spec.json copied into
    another folder is named, not reported), reads the shared stages a job used from its provenance.json,
    and imports neither torch nor any method's code."""
    import shutil
    import subprocess
    import sys

    from bench.report import epochs_with_stages

    results, specs = fixture_results
    dense = job_dir(results, specs[0])
    shutil.copytree(dense, dense.parent / "dense-copied-by-hand")
    stage = results / "stages" / "dense-trajectory-0123456789ab"
    stage.mkdir(parents=True)
    (stage / "epochs.csv").write_text("phase,epoch,lr,train_loss,train_accuracy,test_loss,test_accuracy,test_top5,"
                                      "sparsity,seconds\ntrain,0,0.1,2.0,0.4,1.9,0.5,,0.0,1.0\n"
                                      "train,1,0.1,1.5,0.55,1.4,0.6,,0.0,2.0\n")
    write_json(dense / "provenance.json", {"git": {"sha": "0123456789abcdef"}, "stages": [stage.name]})
    out = tmp_path / "report"
    script = ("import sys; from bench.report import main; code = main(sys.argv[1:]); "
              "loaded = sorted(name for name in sys.modules if name == 'torch' or name.startswith(('methods.', 'baselines.'))"
              " and name != 'methods.registry'); print('loaded:', loaded); sys.exit(code)")
    ran = subprocess.run([sys.executable, "-c", script, "--all-jobs", "--results", str(results), "--out", str(out),
                          "--figure-workers", "1"], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert ran.returncode == 0, ran.stderr
    assert "loaded: []" in ran.stdout, ran.stdout
    readme = (out / "README.md").read_text()
    assert f"- `dense-copied-by-hand` (corrupt): {results}/jobs/dense-copied-by-hand/spec.json holds the spec of job " \
        f"{specs[0].job_id}" in readme

    collection = collect(results)
    epochs = epochs_with_stages(collection.records, collection.jobs[collection.jobs.job_id == specs[0].job_id])
    assert list(epochs.test_accuracy) == [0.5, 0.6] and set(epochs.job_id) == {specs[0].job_id}
