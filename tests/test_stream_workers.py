"""DataLoader workers never outnumber the CPUs the process may run on (taskset, cpusets): no torch warning."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from transgan.stream import usable_workers

# A run pinned to one CPU asks for 2 workers: the loader gets 1 and torch stays quiet about it.
PINNED = """
import os, warnings
import torch
from torch.utils.data import Dataset
from transgan.stream import BatchStream


class Numbers(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, key):  # the (index, seed) keys of the training sampler
        return torch.tensor(float(key[0]))


os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
warnings.simplefilter("error")  # any warning fails the run
stream = BatchStream(Numbers(), batch_size=2, seed=0, num_workers=2)
batches = stream.batches(0)
first = next(batches)
print(stream.num_workers, stream.loader(0).num_workers, len(first))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this system")
def test_a_run_pinned_to_one_cpu_gets_one_worker_and_no_warning():
    result = subprocess.run([sys.executable, "-c", PINNED], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1", "1", "2"]
    assert "worker" not in result.stderr, result.stderr


def test_usable_workers_keeps_what_fits():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    assert usable_workers(0) == 0
    if cpus is not None:
        assert usable_workers(1) == 1 and usable_workers(cpus + 5) == cpus
