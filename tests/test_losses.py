"""Closed forms of the losses and the orientation read-out (loc3r.model.losses)."""

import math

import torch

from loc3r.model.config import Loc3RConfig
from loc3r.model.losses import (bin_centers, circular_soft_argmax, gaussian_nll, kl_orientation, wrap,
                                wrapped_gaussian_target)


def test_gaussian_nll_equals_formula_and_torch():
    g = torch.Generator().manual_seed(0)
    mu, log_sigma, target = (torch.randn(3, 5, 2, generator=g) for _ in range(3))
    mask = torch.rand(3, 5, generator=g) > 0.3
    floor = 0.5  # large enough that some sigmas are floored
    s = torch.exp(log_sigma).clamp(min=floor)
    per = 0.5 * ((target - mu) ** 2 / s ** 2 + torch.log(s ** 2))  # [3, 5, 2]
    expected = per[mask].mean()
    got = gaussian_nll(mu, log_sigma, target, mask, floor)
    assert torch.allclose(got, expected, atol=1e-6)
    # the same as torch's GaussianNLLLoss (variance clamped at floor^2, mean over entries and axes)
    ref = torch.nn.GaussianNLLLoss(eps=floor ** 2)(mu[mask], target[mask], torch.exp(2 * log_sigma[mask]))
    assert torch.allclose(got, ref, atol=1e-6)


def test_beta_nll_weights_each_term_by_sigma_without_gradient():
    """beta-NLL (Seitzer et al. 2022): the mean's gradient is the NLL's times sigma^(2 beta), so d/dmu =
    -(t - mu) / sigma^(2 - 2 beta) per entry; sigma's gradient vanishes where the NLL's does (same minimisers)."""
    g = torch.Generator().manual_seed(1)
    mu, log_sigma, target = (torch.randn(4, 2, generator=g) for _ in range(3))
    mask = torch.ones(4, dtype=torch.bool)
    for beta in (0.5, 1.0):
        m, ls = mu.clone().requires_grad_(), log_sigma.clone().requires_grad_()
        gaussian_nll(m, ls, target, mask, 1e-3, beta=beta).backward()
        s2 = torch.exp(2 * log_sigma)
        assert torch.allclose(m.grad, -(target - mu) / s2 ** (1 - beta) / 8, atol=1e-6)  # 8 entries averaged
        assert torch.allclose(ls.grad, (1 - (target - mu) ** 2 / s2) * s2 ** beta / 8, atol=1e-6)
    # at sigma = |t - mu| the NLL's sigma gradient is 0, and so is beta-NLL's
    ls = torch.log((target - mu).abs()).requires_grad_()
    gaussian_nll(mu, ls, target, mask, 1e-6, beta=0.5).backward()
    assert ls.grad.abs().max() < 1e-6
    assert gaussian_nll(mu, log_sigma, target, mask, 1e-3, beta=0.0) == gaussian_nll(mu, log_sigma, target, mask,
                                                                                     1e-3)


def test_masked_entries_contribute_nothing_and_all_masked_is_zero():
    mu = torch.zeros(4, 2, requires_grad=True)
    log_sigma = torch.zeros(4, 2, requires_grad=True)
    target = torch.tensor([[1.0, 1.0], [float("nan"), 0.0], [float("inf"), 1.0], [2.0, 2.0]])
    mask = torch.tensor([True, False, False, True])
    a = gaussian_nll(mu, log_sigma, target, mask, 0.01)
    b = gaussian_nll(mu[[0, 3]], log_sigma[[0, 3]], target[[0, 3]], torch.ones(2, dtype=torch.bool), 0.01)
    assert torch.allclose(a, b)
    none = gaussian_nll(mu, log_sigma, target, torch.zeros(4, dtype=torch.bool), 0.01)
    none.backward()
    assert none.item() == 0.0 and torch.isfinite(mu.grad).all() and (mu.grad == 0).all()
    logits = torch.randn(3, 36, requires_grad=True)
    kl = kl_orientation(logits, wrapped_gaussian_target(torch.zeros(3), 36, 0.2), torch.zeros(3, dtype=torch.bool))
    kl.backward()
    assert kl.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_orientation_target_wraps_across_pi():
    bins, sigma = 36, 2 * math.pi / 36
    t = wrapped_gaussian_target(torch.tensor(math.pi - 0.01), bins, sigma)
    assert torch.allclose(t.sum(), torch.tensor(1.0))
    # pi - 0.01 lies 0.01 rad past the last bin centre (pi - 5 deg) towards the first (-pi + 5 deg): the mass
    # is split across the +-pi boundary, mirror-symmetric about pi
    top2 = set(t.topk(2).indices.tolist())
    assert top2 == {0, bins - 1}
    th = bin_centers(bins)
    d = wrap(th - (math.pi - 0.01))  # [bins] signed distances
    expected = torch.exp(-d ** 2 / (2 * sigma ** 2))
    assert torch.allclose(t, expected / expected.sum(), atol=1e-7)
    # the symmetric pair of bins at equal distance on either side of pi - 0.01 has equal weight
    for k in range(1, 6):
        left, right = bins - k, k - 1  # pi - (k - 0.5) * 10 deg and -pi + (k - 0.5) * 10 deg
        dl, dr = abs(float(d[left])), abs(float(d[right]))
        assert abs(dl - (2 * math.pi / bins * (k - 0.5) - 0.01)) < 1e-5
        assert abs(dr - (2 * math.pi / bins * (k - 0.5) + 0.01)) < 1e-5
    # exactly at pi: first and last bins get the same mass
    t_pi = wrapped_gaussian_target(torch.tensor(math.pi), bins, sigma)
    assert torch.allclose(t_pi, t_pi.flip(0), atol=1e-6)


def test_circular_soft_argmax():
    bins = 36
    th = bin_centers(bins)
    for b in (0, 7, 18, 35):
        one_hot = torch.zeros(bins)
        one_hot[b] = 1
        assert abs(float(circular_soft_argmax(one_hot)) - float(th[b])) < 1e-5
    # half on the last bin (pi - 5 deg), half on the first (-pi + 5 deg): the mean direction is pi (or -pi)
    straddle = torch.zeros(bins)
    straddle[0] = straddle[-1] = 0.5
    assert abs(abs(float(circular_soft_argmax(straddle))) - math.pi) < 1e-5
    # a wrapped Gaussian target's soft-argmax recovers its centre, also next to the boundary, at the 7B's sigma (one
    # bin) and the tiny preset's (60 deg)
    for sigma in (2 * math.pi / bins, Loc3RConfig.tiny().orientation_sigma_rad):
        for yaw in (math.pi - 0.01, -math.pi + 0.02, 0.3, -2.0):
            got = circular_soft_argmax(wrapped_gaussian_target(torch.tensor(yaw), bins, sigma))
            assert abs(float(wrap(got - yaw))) < 1e-4


def test_kl_is_zero_at_the_target_and_matches_torch():
    target = wrapped_gaussian_target(torch.tensor([0.1, -3.0, 2.5]), 36, 0.3)
    assert kl_orientation(torch.log(target), target).abs().item() < 1e-6
    logits = torch.randn(3, 36)
    ref = torch.nn.functional.kl_div(torch.log_softmax(logits, -1), target, reduction="batchmean")
    assert torch.allclose(kl_orientation(logits, target), ref, atol=1e-6)
