"""Shared test settings: one torch thread per test process (tiny models run fastest single-threaded, and
2-core machines shared with other jobs slow to a crawl when threads oversubscribe the cores)."""

import torch

torch.set_num_threads(1)
