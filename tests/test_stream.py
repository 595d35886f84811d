"""The batch stream: data order from any step, per-process slices, resolution stages and fade-in alpha."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import Dataset

from transgan.errors import TransganError
from transgan.stream import BatchStream, Stage


class Numbers(Dataset):
    """Item i is i; the key's sample seed is returned too, so augmentation seeds are compared as well."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, key):
        index, seed = key
        return {"i": index, "seed": seed}


def take(stream: BatchStream, step: int, n: int) -> list[list[int]]:
    return [batch["i"].tolist() for batch in itertools.islice(stream.batches(step), n)]


def test_from_any_step_the_stream_continues_the_same_order():
    stream = BatchStream(Numbers(), batch_size=3, seed=1)
    straight = take(stream, 0, 12)  # 3 batches per epoch: 4 epochs
    assert [take(stream, k, 12 - k) for k in (1, 3, 7)] == [straight[1:], straight[3:], straight[7:]]
    assert len(set(sum(straight[:3], []))) == 9 and straight[:3] != straight[3:6]


def test_two_processes_split_each_global_batch():
    one = take(BatchStream(Numbers(), batch_size=4, seed=2), 0, 4)
    ranks = [take(BatchStream(Numbers(), batch_size=2, seed=2, rank=r, world_size=2), 0, 4) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == one


def test_stages_switch_on_schedule_with_their_batch_size_and_alpha_ramps_over_the_fade():
    stages = [Stage(4, images=12), Stage(8, images=24, fade_images=12, batch_size=2), Stage(16, images=8, batch_size=4)]
    stream = BatchStream(Numbers(), batch_size=3, seed=0, stages=stages)
    assert stream.stage_steps == [4, 12, 2] and stream.starts == [0, 4, 16] and stream.total_steps == 18
    assert [stream.stage_at(step) for step in (0, 3)] == [(0, 1.0), (0, 1.0)]
    alphas = [stream.stage_at(step)[1] for step in range(4, 12)]
    assert alphas == [k / 6 for k in range(6)] + [1.0, 1.0]  # 12 images at batch 2: 6 steps of fade
    assert stream.stage_at(16) == (2, 1.0) and stream.stage_at(100) == (2, 1.0)  # the last stage goes on
    sizes = [len(batch) for batch in take(stream, 0, 20)]
    assert sizes == [3] * 4 + [2] * 12 + [4] * 4
    # Images shown by the end of each step (the EMA's ramp-up reads it): the running sum of those batch sizes.
    assert [stream.images_seen(step) for step in range(20)] == [sum(sizes[: step + 1]) for step in range(20)]
    two = BatchStream(Numbers(), batch_size=2, seed=0, world_size=2, stages=stages)
    # Global batches of 2 processes: stage 0 takes 12 / (2 * 2) = 3 steps, then stage 1's first step.
    assert two.images_seen(0) == 2 * 2 and two.images_seen(two.starts[1]) == (3 * 2 + 2) * 2
    # resuming in the middle of the fade (step 7) gives the batches an uninterrupted run gets there
    assert take(stream, 7, 10) == take(stream, 0, 17)[7:]


def test_a_batch_larger_than_the_data_is_one_clear_line():
    with pytest.raises(TransganError, match="--batch-size 11 is larger than the dataset"):
        BatchStream(Numbers(), batch_size=11, seed=0)
    with pytest.raises(TransganError, match="--batch-size 11 is larger"):
        BatchStream(Numbers(), batch_size=1, seed=0, stages=[Stage(4, 4), Stage(8, 4, batch_size=11)])


def test_seeds_of_samples_are_part_of_the_order():
    stream = BatchStream(Numbers(), batch_size=2, seed=5)
    first = next(stream.batches(0))
    again = next(stream.batches(0))
    assert torch.equal(first["seed"], again["seed"])
