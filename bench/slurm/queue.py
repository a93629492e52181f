"""What the SLURM queue says about this user's jobs (`squeue`, never sacct), and its reasons in words.

`squeue_states` maps a SLURM id to its queue state and reason; `bench.tracking` combines it with the job
folders (the source of truth: submitit's `job.state` calls sacct, which many clusters lack, submitit
#1720). A pending job's reason is given in words a user can act on (`QUEUE_REASONS`).
"""

from __future__ import annotations

import getpass
import shutil
import subprocess

ACTIVE_QUEUE_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING"}
WAITING_QUEUE_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
QUEUE_REASONS = {
    "PartitionConfig": "the request exceeds what the partition allows (CPUs, memory, GPUs or time); it will never "
                       "start: cancel it and resubmit with smaller --cpus-per-job/--mem-gb/--gpus-per-job/--time-min",
    "Resources": "waiting for free CPUs, memory or GPUs on a node",
    "Priority": "waiting behind jobs of higher priority",
    "Dependency": "waiting for the job it depends on (IMC's analysis) to finish",
    "DependencyNeverSatisfied": "the job it depends on failed, so it will never start: cancel it, fix the "
                                "dependency and run bench.run again",
    "JobArrayTaskLimit": "waiting: the array already runs --array-parallelism tasks",
    "ReqNodeNotAvail": "the nodes it may use are down or reserved",
    "QOSMaxJobsPerUserLimit": "waiting: you run as many jobs as your QOS allows",
    "AssocGrpCpuLimit": "waiting: your account's CPU limit is reached",
    "BeginTime": "waiting for its start time (a requeued job waits a moment)",
    "JobHeldUser": "held by you (scontrol release ID)",
    "JobHeldAdmin": "held by an administrator",
    "launch failed requeued held": "its launch failed and SLURM held it; scontrol release ID once the node is fixed",
}


def queue_reason(reason: str) -> str:
    """The queue's reason for a pending job, in words (the raw code in parentheses)."""
    words = QUEUE_REASONS.get(reason)
    return f"{words} ({reason})" if words else reason


def squeue_states() -> dict[str, tuple[str, str]] | None:
    """SLURM id ("123" or "123_4") -> (state, reason) of this user's jobs; None without squeue.

    `-t all` also lists jobs that ended within the controller's MinJobAge (e.g. CANCELLED), which
    names the reason a job left the queue; older ones are simply absent.
    """
    if shutil.which("squeue") is None:
        return None
    try:
        output = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%T|%r"],
                                capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    states = {}
    for line in output.splitlines():
        slurm_id, state, reason = (line.split("|") + ["", ""])[:3]
        states[slurm_id.strip()] = (state.strip(), reason.strip())
    return states
