"""The losses of Loc3R-VLM (paper Sec. 3.2-3.4) and the orientation read-out, in one place.

- `gaussian_nll`: heteroscedastic Gaussian negative log-likelihood of BEV (x, y) targets, used by the layout
  head (every vision token) and the position head (the <Pos> token). Per axis 0.5 * ((x - mu)^2 / s^2 + log s^2),
  s floored at `sigma_floor`; the masked mean over tokens and both axes, i.e. exactly
  `torch.nn.GaussianNLLLoss(eps=sigma_floor**2)` restricted to the valid entries.
- `wrapped_gaussian_target` / `kl_orientation`: the 36-bin orientation target and KL(target || softmax(logits)).
- `circular_soft_argmax`: the continuous yaw read-out atan2(sum p sin th, sum p cos th).

Masked entries contribute nothing, and an all-masked batch gives a loss of exactly 0 (no NaN), so a batch
without any situated question still back-propagates cleanly. Everything is computed in float32.

Every masked mean takes an optional `denominator` that replaces the local count of valid entries: the trainer
passes the count over the whole optimizer step (all micro-batches and ranks), so that gradient accumulation and
data parallelism give exactly the gradient of one large batch.
"""

from __future__ import annotations

import math

import torch

from loc3r import geometry


def masked_mean(values: torch.Tensor, mask: torch.Tensor, denominator: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is True (broadcast over trailing dims), 0 when nothing is valid; divided by
    `denominator` instead of the number of valid entries when given."""
    mask = mask.to(torch.bool)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    mask = mask.expand_as(values)
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / (mask.sum().clamp(min=1) if denominator is None else denominator)


def gaussian_nll(mu: torch.Tensor, log_sigma: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                 sigma_floor: float, denominator: torch.Tensor | None = None, beta: float = 0.0) -> torch.Tensor:
    """Masked Gaussian NLL (constant 0.5 log 2pi dropped). mu, log_sigma, target: [..., 2]; mask: [...] bool.
    beta > 0: beta-NLL, each term weighted by sigma^(2 beta) without gradient (Loc3RConfig.nll_beta)."""
    log_sigma = log_sigma.float().clamp(min=math.log(sigma_floor))  # sigma >= sigma_floor
    # masked targets may be NaN / inf: zero them first, or their gradient (0 * NaN) would poison mu
    target = torch.where(mask.to(torch.bool)[..., None], target.float(), torch.zeros((), device=target.device))
    err2 = (target - mu.float()) ** 2
    nll = 0.5 * err2 * torch.exp(-2 * log_sigma) + log_sigma  # 0.5 * (d^2 / s^2 + log s^2)
    if beta:
        nll = nll * torch.exp(2 * beta * log_sigma).detach()
    return masked_mean(nll, mask, denominator)


def bin_centers(bins: int, device=None) -> torch.Tensor:
    """Orientation bin centres th_b = -pi + (b + 0.5) * 2pi / bins, [bins] radians."""
    return torch.as_tensor(geometry.yaw_bin_centres(bins), dtype=torch.float32, device=device)


def wrap(rad: torch.Tensor) -> torch.Tensor:
    """Wrap angles to [-pi, pi)."""
    return torch.remainder(rad + math.pi, 2 * math.pi) - math.pi


def wrapped_gaussian_target(yaw_rad: torch.Tensor, bins: int, sigma: float) -> torch.Tensor:
    """Wrapped-Gaussian distribution over the bins centred on `yaw_rad` [...] -> [..., bins]."""
    th = bin_centers(bins, yaw_rad.device)
    d = wrap(th - yaw_rad.float()[..., None])  # [..., bins], the angular difference mapped to [-pi, pi)
    return torch.softmax(-d ** 2 / (2 * sigma ** 2), -1)  # exp normalised; stable for a sigma far below a bin


def yaw_blind_kl(sigma_rad: float, bins: int) -> float:
    """The orientation loss of a head that knows nothing of the yaw: KL(target || uniform) = log(bins) - the
    wrapped-Gaussian target's entropy, averaged over yaws (1 degree apart). 2.17 at 10 deg, 1.07 at 30, 0.39 at 60
    (36 bins): the scale a threshold on the orientation loss is set in (`loc3r train --loop-starts-when`)."""
    target = wrapped_gaussian_target(torch.arange(360) * (2 * math.pi / 360) - math.pi, bins, sigma_rad)
    return float((torch.xlogy(target, target).sum(-1) + math.log(bins)).mean())


def kl_orientation(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                   denominator: torch.Tensor | None = None) -> torch.Tensor:
    """KL(target || softmax(logits)) summed over bins, masked mean over samples. logits, target: [B, bins]."""
    log_p = torch.log_softmax(logits.float(), -1)
    if mask is None:
        mask = torch.ones(target.shape[:-1], dtype=torch.bool, device=target.device)
    target = torch.where(mask[..., None], target.float(), torch.zeros((), device=target.device))  # as in gaussian_nll
    kl = (torch.xlogy(target, target) - target * log_p).sum(-1)  # [B]; xlogy: 0 * log 0 = 0
    return masked_mean(kl, mask, denominator)


def circular_soft_argmax(probs: torch.Tensor) -> torch.Tensor:
    """Yaw (rad, [-pi, pi]) of a distribution over the bins: atan2 of the expectation on the unit circle."""
    th = bin_centers(probs.shape[-1], probs.device)
    p = probs.float()
    return torch.atan2((p * torch.sin(th)).sum(-1), (p * torch.cos(th)).sum(-1))
