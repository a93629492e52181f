"""`python -m bench.perf` on a tiny CPU job: old settings beside new, packing, and the stored throughput."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.devices import device_name
from bench.perf import main as perf_main
from bench.throughput import read_throughputs


def test_epoch_and_packing_are_measured_and_stored(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    perf = tmp_path / "perf.json"
    arguments = ["--device", "cpu", "--threads", "1", "--arch", "resnet8", "--train-images", "200", "--test-images",
                 "300", "--job-epochs", "3", "--measure", "epoch,packing", "--packing", "1", "--packing-epochs", "1",
                 "--perf-file", str(perf)]
    threads = torch.get_num_threads()
    try:
        assert perf_main(arguments) == 0
        name = device_name(torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    output = capsys.readouterr().out
    assert "old settings" in output and "new defaults" in output and "new/old = " in output
    stored = read_throughputs(perf)[name]["resnet8/fp32"]
    assert stored["train_images_per_s"] > 0 and stored["eval_images_per_s"] > 0
    assert stored["epoch_s_old"] > 0 and stored["epoch_s_new"] > 0 and stored["job_epochs"] == 3
    assert stored["host"] and stored["machine"] and stored["measured"]
    assert set(stored["packed_images_per_s"]) == {"1"} and stored["packed_images_per_s"]["1"] > 0
    assert perf_main(arguments[:-2] + ["--measure", "overhead,speed", "--perf-file", str(perf)]) == 2


def test_bf16_support_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    from bench.cpu_support import bf16_support, bf16_support_from_cpuinfo

    def cpuinfo(flags: str) -> Path:
        path = tmp_path / f"cpuinfo-{len(list(tmp_path.iterdir()))}"
        path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
        return path

    amx = bf16_support_from_cpuinfo(cpuinfo("fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile"))
    assert amx.fast and amx.flags == ("amx_bf16", "avx512_bf16") and "should pay" in amx.advice()
    avx2 = bf16_support_from_cpuinfo(cpuinfo("fpu sse avx2 fma"))
    assert avx2.fast is False and "will not pay here: use fp32" in avx2.advice()
    assert bf16_support_from_cpuinfo(tmp_path / "absent").fast is None
    assert "unknown" in bf16_support_from_cpuinfo(tmp_path / "absent").advice()
    assert bf16_support().fast in (True, False, None)


def test_precisions_are_a_checked_comma_list(capsys: pytest.CaptureFixture) -> None:
    assert perf_main(["--device", "cpu", "--precision", "fp32,fp16", "--measure", "overhead"]) == 2
    assert "--precision 'fp32,fp16'; accepted: a comma list of fp32, bf16" in capsys.readouterr().err


def test_report_scale_times_report_and_status_on_copied_folders(tmp_path):
    from bench.report_scale import make_folders, measure
    from tests.test_report import record, spec, write_job

    source = tmp_path / "source"
    for trial in range(2):
        for method, sparsity in (("dense", None), ("snip", 0.5)):
            job = spec(method, trial, sparsity)
            write_job(source, job, [record(job, 0.8, sparsity or 0.0)])
    assert make_folders(source, tmp_path / "made", 6) == 6
    assert len(list((tmp_path / "made" / "jobs").iterdir())) == 6  # copies get ids of their own
    rows = measure(4, tmp_path / "work", source=source)
    assert [(row["folders"], row["command"]) for row in rows] == [(2, "report"), (2, "status"), (4, "report"),
                                                                   (4, "status")]
    assert all(row["seconds"] > 0 and row["peak_mb"] > 0 for row in rows)
    assert (tmp_path / "work" / "folders-4" / "report" / "README.md").exists()


def test_the_cpu_model_is_read_from_cpuinfo_and_the_architecture_stands_in_without_it(tmp_path: Path) -> None:
    import platform

    from bench.devices import cpu_model

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6430\n")
    assert cpu_model(cpuinfo) == "Intel(R) Xeon(R) Gold 6430"
    assert cpu_model(tmp_path / "missing") == (platform.processor() or platform.machine())
