"""The task/trainer boundary: a task owns its networks and declares the phases the trainer steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from transgan.recipe import Recipe
from transgan.stream import Stage

# A phase's loss function runs that phase's forward passes and returns the loss to minimise plus named
# scalar tensors to log (kept on the device; the trainer syncs them only every `log_every` steps).
PhaseLoss = Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class Phase:
    """One optimisation phase of a training step, as in StyleGAN2's phase list.

    `networks` are the ones this phase's optimizer updates (one phase may step several: CUT's G and its MLP
    heads); `group` names the learning-rate group of that optimizer in the task's Recipe ("G" or "D": --lr-g
    and --lr-d set them). `frozen` are evaluated in the phase but must not receive gradients (the
    discriminator during the generator phase). `interval` runs the phase only on steps divisible by it, which
    gives n_critic discriminator steps per generator step.

    `optimizer` names the optimizer the phase steps (default: the phase's own name). Phases naming the same
    one share it, Adam moments included: StyleGAN2's regularisation phases step their network's optimizer.
    They must list the same networks and group.

    `lazy` marks a lazy regulariser (StyleGAN2's Greg/Dreg): run every `interval` steps, its loss counts for
    `interval` steps (the trainer multiplies it by `interval`), and the optimizer it shares is built with
    lr * k/(k+1) and betas ** (k/(k+1)), k = interval, so that main and regularisation steps together move
    the weights as an every-step regulariser would (Karras et al. 2020, appendix B).

    `zero_nonfinite_grads` replaces NaN by 0 and +-inf by +-1e5 in the phase's gradients before the step,
    as StyleGAN2-ADA's loop does.
    """

    name: str
    networks: list[str]
    loss: PhaseLoss
    group: str
    frozen: list[str] = field(default_factory=list)
    interval: int = 1
    optimizer: str | None = None
    lazy: bool = False
    zero_nonfinite_grads: bool = False

    @property
    def optimizer_name(self) -> str:
        """The optimizer this phase steps (shared by every phase giving the same name)."""
        return self.optimizer or self.name


class GANTask:
    """Base class of tasks. A subclass sets `name`, `config_class`, builds its networks in `__init__`
    and implements the methods below; the trainer knows nothing else about it."""

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any, dataset: Dataset):
        self.config = config
        self.dataset = dataset
        self.networks = nn.ModuleDict()
        self.device = torch.device("cpu")
        self.step = 0  # the trainer's step, set before each forward (lazy regularisers use it)
        # This process's place among the training processes, set by the trainer: a task that draws its own
        # latents draws them for the global batch and takes its rank's slice, so N processes train like one.
        self.rank, self.world_size = 0, 1

    # -- data ---------------------------------------------------------------------------------------
    @classmethod
    def build_dataset(cls, config: Any) -> Dataset:
        """The training dataset described by the task config (items use the (index, seed) key contract)."""
        raise NotImplementedError

    # -- training -----------------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        """The phases of one training step, in order."""
        raise NotImplementedError

    def recipe(self) -> Recipe:
        """This task's published defaults (learning rates per phase group, betas, batch size, schedule, EMA);
        options the user gives override them."""
        return Recipe()

    def stages(self) -> list[Stage]:
        """Resolution stages of a growing network (ProGAN); none by default. The trainer decides when a stage
        starts and the fade-in alpha, and calls set_stage before each step."""
        return []

    def set_stage(self, index: int, alpha: float) -> None:
        """Switch to stage `index` (depth, data resolution) with fade-in `alpha` in [0, 1]."""

    def forward(self, batch: dict[str, Any]) -> None:
        """Move the batch to the device and run the passes every phase shares (fakes from real inputs)."""
        raise NotImplementedError

    def ema_networks(self) -> list[str]:
        """Networks whose EMA copy is kept when EMA is on (the generators)."""
        return [name for name in self.networks if name.startswith("G")]

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Parameters no optimizer updates (Freeze-D's first blocks); the trainer keeps their gradients off."""
        return []

    # -- state that is not a network parameter (image pools...) for exact resume -------------------
    # The default keeps the discriminator regulariser's state (ADA's p); an override merges super()'s.
    def extra_state(self) -> dict[str, torch.Tensor]:
        from transgan.tasks.regularizers import regularizer_state

        return regularizer_state(self)

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        from transgan.tasks.regularizers import load_regularizer_state

        load_regularizer_state(self, tensors)

    # -- outputs ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_grid(self, batch: dict[str, Any], networks: dict[str, nn.Module]) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] to show as a grid, made by `networks` (EMA copies when enabled)."""
        raise NotImplementedError

    def model_file_kwargs(self) -> dict[str, Any]:
        """What `transgan.save` needs besides the networks: primary, directions, class names, extra."""
        return {}

    def inference_networks(self) -> list[str]:
        """The networks a model file keeps (generators; discriminators stay in training checkpoints)."""
        return self.ema_networks()
