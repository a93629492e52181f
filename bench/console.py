"""The `prunebench` console script: `prunebench run|status|report|perf [flags]`.

Each subcommand is the matching `python -m bench.<name>` entry point with the same flags
(`prunebench run --help` shows them); the `python -m` forms keep working beside it.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "run": ("bench.run", "expand a grid into jobs and run or submit them"),
    "status": ("bench.status", "where the jobs of a results folder stand"),
    "report": ("bench.report", "tables and figures from the job folders"),
    "perf": ("bench.perf", "what the harness and masks cost over bare PyTorch"),
    "check": ("bench.check", "does a method keep the contract the harness relies on"),
    "records": ("bench.records", "pack a results folder's records beside a report, or unpack them"),
}


def usage() -> str:
    lines = ["usage: prunebench {" + ",".join(COMMANDS) + "} [flags]   (prunebench COMMAND --help for its flags)", ""]
    lines += [f"  {name:7s} {summary} (python -m {module})" for name, (module, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; accepted: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[name][0]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
