"""--diffaugment in every registered task, both phases: each image batch any discriminator sees, in the D phase
and in the G phase, is DiffAugment's output for an un-augmented batch it was given, through the real trainer."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from test_cgan import SIZE, write_shapes
from test_trainer import quiet_config, write_images

from transgan.registry import TASKS
from transgan.tasks.configs.shared import GenerationDataConfig, TranslationConfig
from transgan.tasks.regularizers import DiscriminatorRegularizer
from transgan.train import build_trainer

# Small options, applied where a task's config has the field (a new task gets them without an edit here).
TINY_TRANSLATION = dict(arch="resnet_6blocks", ngf=8, ndf=4, load_size=32, crop_size=32, preprocess="none")
TINY_GENERATION = dict(image_size=SIZE, latent_dim=8, w_dim=8, ngf=4, ndf=4, channel_base=64, channel_max=8)
POLICY = "color,translation,cutout"


def tiny_config(task: str, root: Path) -> Any:
    """A tiny config of `task` with DiffAugment on, its data written under `root`."""
    config_class = TASKS.get(task).config_class
    fields = {field.name for field in dataclasses.fields(config_class)}
    if issubclass(config_class, GenerationDataConfig):
        options = {**TINY_GENERATION, "data": str(write_shapes(root / "shapes", per_class=4, mode="RGB"))}
    elif issubclass(config_class, TranslationConfig) and {"domain_a", "domain_b"} <= fields:
        write_images(root / "a", 4, seed=3)
        write_images(root / "b", 4, seed=4)
        options = {**TINY_TRANSLATION, "domain_a": str(root / "a"), "domain_b": str(root / "b")}
    elif issubclass(config_class, TranslationConfig) and "data" in fields:
        write_images(root / "pairs" / "A", 4, seed=1)
        write_images(root / "pairs" / "B", 4, seed=2)
        options = {**TINY_TRANSLATION, "data": str(root / "pairs")}
    else:
        pytest.fail(f"task '{task}': no tiny data recipe in {__file__}; add one so DiffAugment is checked for it")
    return config_class(**{key: value for key, value in options.items() if key in fields}, diffaugment=POLICY)


class RecordingAugment:
    """Stands in for a regulariser's DiffAugment: runs it and keeps every (input, output) pair."""

    def __init__(self, augment: Any, pairs: list[tuple[torch.Tensor, torch.Tensor]]):
        self.augment, self.pairs = augment, pairs

    def __bool__(self) -> bool:
        return bool(self.augment)

    def __call__(self, images: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        output = self.augment(images, *args, **kwargs)
        self.pairs.append((images.detach().clone(), output.detach().clone()))
        return output


@pytest.mark.parametrize("task", TASKS.names())
def test_every_discriminator_input_is_augmented_in_both_phases(task, tmp_path):
    trainer = build_trainer(task, tiny_config(task, tmp_path), quiet_config(tmp_path / "run", steps=1, batch_size=2))
    regularizers = [value for value in vars(trainer.task).values() if isinstance(value, DiscriminatorRegularizer)]
    assert regularizers, f"task '{task}' keeps no DiscriminatorRegularizer: --diffaugment cannot reach its D"
    augmented: list[tuple[torch.Tensor, torch.Tensor]] = []
    for regularizer in regularizers:
        regularizer.augment = RecordingAugment(regularizer.augment, augmented)

    phase_now: list[str] = []
    seen: dict[str, list[torch.Tensor]] = {}  # phase -> the image batches every D was called with in it
    discriminators = [name for name in trainer.task.networks if name.startswith("D")]
    assert discriminators, f"task '{task}' has no network named D*"
    for name in discriminators:
        record = lambda module, inputs: seen.setdefault(phase_now[-1], []).append(inputs[0].detach().clone())  # noqa: E731
        trainer.task.networks[name].register_forward_pre_hook(record)
    for phase in trainer.phases:
        phase.loss = (lambda loss, name: lambda: (phase_now.append(name), loss())[1])(phase.loss, phase.name)

    trainer.fit()

    d_phases = [p.name for p in trainer.phases if set(p.networks) & set(discriminators)]
    g_phases = [p.name for p in trainer.phases if set(p.frozen) & set(discriminators)]
    assert d_phases and g_phases, (d_phases, g_phases)
    for name in d_phases + g_phases:
        assert seen.get(name), f"task '{task}': no discriminator call in phase {name}"
        for images in seen[name]:
            # D's input is exactly an augmentation's output, and that output differs from what went in.
            source = [inp for inp, out in augmented if out.shape == images.shape and torch.equal(out, images)]
            assert source, f"task '{task}', phase {name}: D saw images that did not go through DiffAugment"
            assert not torch.equal(source[0], images), f"task '{task}', phase {name}: the augmentation changed nothing"
