"""prunebench: one training loop, many pruning methods, the IMC paper's comparison.

The harness (`bench`) holds everything that is not method-specific: registries, data, models, masks,
the training loop, job records, executors and the report. Methods live in `methods/` (the paper's
IMC and the contract) and `baselines/` (the comparison methods).
"""

__version__ = "0.1.0"
