"""Pure loss functions: adversarial losses (registered by name), gradient penalty, R1, L1/cycle/identity."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transgan.errors import TransganError
from transgan.registry import LOSSES

# Every adversarial loss averages over all prediction elements, so a PatchGAN map (N, 1, H, W) and plain
# logits (N,) are treated alike, as the reference GANLoss does. Predictions are cast to float32 first so
# the loss stays accurate under autocast (fp16/bf16 logits lose precision in softplus and squares); float64
# stays float64 (checks against reference runs in double precision).


def _wide(x: Tensor) -> Tensor:
    """`x` in float32, or float64 when it already is."""
    return x if x.dtype == torch.float64 else x.float()


class AdversarialLoss(Protocol):
    """What `--gan-loss NAME` names: the two sides of one GAN game on D's raw predictions (a higher
    prediction means 'more real'). Each returns float32 scalars averaged over all prediction elements."""

    def discriminator(self, real_pred: Tensor, fake_pred: Tensor, real_label: float = 1.0) -> tuple[Tensor, Tensor]:
        """D's loss as (loss_real, loss_fake), each from its own predictions; `real_label` below 1 is one-sided
        label smoothing (raise TransganError where the loss has no target to smooth)."""
        ...

    def generator(self, fake_pred: Tensor) -> Tensor:
        """G's loss on D's predictions for the fakes."""
        ...


def _no_label_smoothing(name: str, real_label: float) -> None:
    # Hinge and Wasserstein losses have no target value to soften: refuse rather than silently ignore.
    if real_label != 1.0:
        raise TransganError(f"adversarial loss '{name}' has no real label to smooth; use real_label=1.0")


@LOSSES.register("vanilla")
class VanillaLoss(AdversarialLoss):
    """The reference GANLoss('vanilla'): binary cross-entropy on logits against targets 1 (real) and 0 (fake)."""

    def discriminator(self, real_pred: Tensor, fake_pred: Tensor, real_label: float = 1.0) -> tuple[Tensor, Tensor]:
        real_pred, fake_pred = _wide(real_pred), _wide(fake_pred)
        loss_real = F.binary_cross_entropy_with_logits(real_pred, torch.full_like(real_pred, real_label))
        loss_fake = F.binary_cross_entropy_with_logits(fake_pred, torch.zeros_like(fake_pred))
        return loss_real, loss_fake

    def generator(self, fake_pred: Tensor) -> Tensor:
        fake_pred = _wide(fake_pred)
        return F.binary_cross_entropy_with_logits(fake_pred, torch.ones_like(fake_pred))


@LOSSES.register("nonsaturating")
class NonSaturatingLoss(AdversarialLoss):
    """The StyleGAN softplus form: D minimises softplus(-D(x)) + softplus(D(G(z))), G minimises softplus(-D(G(z)))."""

    def discriminator(self, real_pred: Tensor, fake_pred: Tensor, real_label: float = 1.0) -> tuple[Tensor, Tensor]:
        real_pred, fake_pred = _wide(real_pred), _wide(fake_pred)
        # With a smoothed target t the real term is the cross-entropy t*softplus(-x) + (1-t)*softplus(x).
        loss_real = real_label * F.softplus(-real_pred) + (1.0 - real_label) * F.softplus(real_pred)
        return loss_real.mean(), F.softplus(fake_pred).mean()

    def generator(self, fake_pred: Tensor) -> Tensor:
        return F.softplus(-_wide(fake_pred)).mean()


@LOSSES.register("minimax")
class MinimaxLoss(NonSaturatingLoss):
    """The original saturating game: D as 'nonsaturating'; G minimises log(1 - sigmoid(D(G(z)))).

    That is -softplus(D(G(z))).
    """

    def generator(self, fake_pred: Tensor) -> Tensor:
        return -F.softplus(_wide(fake_pred)).mean()


@LOSSES.register("lsgan")
class LeastSquaresLoss(AdversarialLoss):
    """The reference GANLoss('lsgan'): mean squared error against targets 1 (real) and 0 (fake)."""

    decision_threshold = 0.5  # targets 1 and 0: D calls a prediction real above 0.5 (see discriminator_accuracy)

    def discriminator(self, real_pred: Tensor, fake_pred: Tensor, real_label: float = 1.0) -> tuple[Tensor, Tensor]:
        real_pred, fake_pred = _wide(real_pred), _wide(fake_pred)
        loss_real = F.mse_loss(real_pred, torch.full_like(real_pred, real_label))
        loss_fake = F.mse_loss(fake_pred, torch.zeros_like(fake_pred))
        return loss_real, loss_fake

    def generator(self, fake_pred: Tensor) -> Tensor:
        fake_pred = _wide(fake_pred)
        return F.mse_loss(fake_pred, torch.ones_like(fake_pred))


@LOSSES.register("hinge")
class HingeLoss(AdversarialLoss):
    """Hinge loss (SAGAN, BigGAN): D minimises relu(1 - D(x)) + relu(1 + D(G(z))), G minimises -D(G(z)).

    `real_label` other than 1.0 raises: there is no target to smooth.
    """

    def discriminator(self, real_pred: Tensor, fake_pred: Tensor, real_label: float = 1.0) -> tuple[Tensor, Tensor]:
        _no_label_smoothing("hinge", real_label)
        return F.relu(1.0 - _wide(real_pred)).mean(), F.relu(1.0 + _wide(fake_pred)).mean()

    def generator(self, fake_pred: Tensor) -> Tensor:
        return -_wide(fake_pred).mean()


@LOSSES.register("wasserstein")
class WassersteinLoss(AdversarialLoss):
    """WGAN critic loss: D minimises D(G(z)) - D(x), G minimises -D(G(z)); pair it with gradient_penalty.

    `real_label` other than 1.0 raises: there is no target to smooth.
    """

    def discriminator(self, real_pred: Tensor, fake_pred: Tensor, real_label: float = 1.0) -> tuple[Tensor, Tensor]:
        _no_label_smoothing("wasserstein", real_label)
        return -_wide(real_pred).mean(), _wide(fake_pred).mean()

    def generator(self, fake_pred: Tensor) -> Tensor:
        return -_wide(fake_pred).mean()


def adversarial_loss(name: str) -> AdversarialLoss:
    """The adversarial loss registered as `name` (an object with .discriminator and .generator)."""
    obj = LOSSES.get(name)  # unknown names raise one line listing the known ones
    # Built-ins register their class; a plugin may register a ready instance.
    return obj() if inspect.isclass(obj) else obj


def gradient_penalty(D: nn.Module, real: Tensor, fake: Tensor, *extra_inputs: Any, center: float = 1.0) -> Tensor:
    """WGAN-GP: mean over the batch of (||grad_x D(x_hat)|| - center)^2 at random interpolates x_hat.

    `extra_inputs` (labels, conditions) are passed to D after the image. The graph is kept so the penalty
    trains D; the caller multiplies it by its weight (lambda, 10 in the paper). center=0 gives the
    zero-centred variant.
    """
    real, fake = real.detach(), fake.detach()
    # One mixing weight per sample, broadcast over channels and pixels.
    alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    interpolates = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
    pred = D(interpolates, *extra_inputs)
    (grad,) = torch.autograd.grad(pred.float().sum(), interpolates, create_graph=True)
    grad_norm = grad.float().flatten(1).norm(2, dim=1)
    return ((grad_norm - center) ** 2).mean()


def r1_penalty(real_pred: Tensor, real_images: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): 0.5 * mean over the batch of ||grad_x D(x)||^2 on real images.

    `real_images` must have had requires_grad set before D was run on them; the caller weighs it (gamma).
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty: call real_images.requires_grad_(True) before running D on them")
    (grad,) = torch.autograd.grad(real_pred.float().sum(), real_images, create_graph=True)
    return 0.5 * grad.float().flatten(1).pow(2).sum(dim=1).mean()


def l1_loss(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute difference (Pix2Pix's reconstruction term)."""
    return (a.float() - b.float()).abs().mean()


def cycle_loss(reconstructed: Tensor, original: Tensor) -> Tensor:
    """CycleGAN's cycle-consistency term: L1 between G_BA(G_AB(A)) and A."""
    return l1_loss(reconstructed, original)


def identity_loss(same: Tensor, original: Tensor) -> Tensor:
    """CycleGAN's identity term: L1 between G_AB(B) and B."""
    return l1_loss(same, original)


def drift_penalty(real_pred: Tensor) -> Tensor:
    """ProGAN's drift term: mean of D(x)^2 on reals, keeping a WGAN critic's scores near 0 (weight 0.001)."""
    return real_pred.float().square().mean()


def lazy_r1_loss(
    D: Callable[..., Tensor], real_images: Tensor, *extra_inputs: Any, gamma: float, every: int = 1
) -> tuple[Tensor, Tensor]:
    """Lazy R1 (StyleGAN2): gamma * every * r1_penalty from a pass of D over the reals, run every `every` steps.

    The reals are detached and set to require grad here; wrap D to augment (`lambda x, y: D(augment(x), y)`)
    and the gradient is taken through the augmentation, as StyleGAN2-ADA does. Returns (weighted penalty,
    D's predictions on the reals, which the main real/fake loss may reuse).
    """
    if every < 1:
        raise TransganError(f"--r1-every {every}: must be at least 1")
    real = real_images.detach().requires_grad_(True)
    real_pred = D(real, *extra_inputs)
    return gamma * every * r1_penalty(real_pred, real), real_pred


def lazy_adam_settings(lr: float, betas: tuple[float, float], every: int) -> tuple[float, tuple[float, float]]:
    """Adam's lr and betas for a network regularised lazily every `every` steps (StyleGAN2 appendix B):
    lr * c and betas ** c with c = every / (every + 1), so the extra steps do not change the effective rate."""
    ratio = every / (every + 1)
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)


def r1_gamma_for(resolution: int, batch_size: int) -> float:
    """StyleGAN2-ADA's R1 weight heuristic: 0.0002 * resolution^2 / batch size (e.g. 32 px, batch 64: 0.0032)."""
    return 0.0002 * resolution**2 / batch_size


def path_length_penalty(
    images: Tensor,
    ws: Tensor,
    mean_length: Tensor | float,
    decay: float = 0.01,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """StyleGAN2's path length regulariser: per sample a = ||J_w^T y|| with y ~ N(0, I) / sqrt(H * W) (the
    square sum over w's features, averaged over the synthesis inputs, then the root); penalty =
    mean((a - mean)^2) against the running mean of a, which moves by `decay` toward this batch's mean.

    `ws` must require grad and `images` be `G.synthesis(ws)`. Returns (penalty, new running mean, detached):
    the caller keeps the mean in its training state and weighs the penalty (2 in StyleGAN2, times the lazy
    interval). y is drawn on the CPU from `generator` or the global CPU RNG.
    """
    height, width = images.shape[-2:]
    y = torch.randn(images.shape, generator=generator).to(images.device, torch.float32) / (height * width) ** 0.5
    (grad,) = torch.autograd.grad((images.float() * y).sum(), ws, create_graph=True)
    squares = grad.float().square().sum(dim=-1)
    lengths = (squares.mean(dim=1) if squares.dim() > 1 else squares).sqrt()
    mean = torch.as_tensor(mean_length, dtype=torch.float32, device=lengths.device)
    mean = torch.lerp(mean, lengths.mean().detach(), decay)
    return (lengths - mean).square().mean(), mean


def discriminator_accuracy(real_pred: Tensor, fake_pred: Tensor, threshold: float = 0.0) -> tuple[Tensor, Tensor]:
    """The fractions of real predictions above `threshold` and fake ones at or below it (all elements of a
    PatchGAN map count). Use `decision_threshold(loss)`: 0 for logits and critics, 0.5 for LSGAN."""
    real_pred, fake_pred = real_pred.detach().float(), fake_pred.detach().float()
    return (real_pred > threshold).float().mean(), (fake_pred <= threshold).float().mean()


def decision_threshold(loss: Any) -> float:
    """Where an adversarial loss object separates real from fake predictions (its `decision_threshold`, else 0)."""
    return float(getattr(loss, "decision_threshold", 0.0))


def patch_nce_loss(f_q: Tensor, f_k: Tensor, batch_size: int, temperature: float = 0.07) -> Tensor:
    """CUT's PatchNCE loss per patch, shape (B * P,): each query f_q[i] (a patch of the output) must pick its
    key f_k[i] (the same position in the input) among the other P - 1 keys of the same image.

    f_q, f_k: (B * P, C), image-major, as PatchSampleF returns them; f_k gets no gradient. Logits are the
    dot products divided by `temperature`; the positive's own negative (the diagonal) is set to -10 before
    dividing, as in the reference. `batch_size` B splits the rows into images (negatives from the same image
    only, CUT's and FastCUT's setting); 1 takes negatives from the whole batch.
    """
    f_q = _wide(f_q)
    f_k = f_k.detach().to(f_q.dtype)
    rows, dim = f_q.shape
    l_pos = (f_q * f_k).sum(dim=1, keepdim=True)
    q, k = f_q.view(batch_size, -1, dim), f_k.view(batch_size, -1, dim)
    patches = q.shape[1]
    l_neg = torch.bmm(q, k.transpose(2, 1))
    diagonal = torch.eye(patches, device=f_q.device, dtype=torch.bool)[None]
    l_neg = l_neg.masked_fill(diagonal, -10.0).view(-1, patches)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(rows, dtype=torch.long, device=f_q.device), reduction="none")
