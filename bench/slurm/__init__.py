"""Everything SLURM-specific, together: `--executor slurm` submits a plan as SLURM array jobs through
submitit and returns at once (`bench.executor_registry.SlurmExecutor` looks it up by name).

- `executor`: `SlurmSettings` (what `--executor slurm` asks the cluster for) and `submit_slurm`, which
  submits what is not done as arrays with `afterok` dependencies and logs each submission to `jobs.jsonl`;
- `tasks`: the callables an array task runs (`SpecJob`, `SpecJobGroup`), requeued by submitit on
  preemption or timeout and resuming from the last finished epoch;
- `limits`: what the cluster allows (`scontrol`): a request no node of the partition can meet is refused
  before submission, and arrays are chunked to MaxArraySize;
- `queue`: what `squeue` says of the submitted jobs, and its pending reasons in words (`bench.tracking`
  combines it with the job folders, which are the source of truth).

`tests/slurm/start-cluster.sh` starts a one-node cluster on which the tests marked `slurm` run.
"""
