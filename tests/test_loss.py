import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import common


def batch(N=6, n=10, D=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, n, generator=g, dtype=torch.float64)
    phi = torch.randn(N, D, generator=g, dtype=torch.float64)
    p = torch.softmax(torch.randn(N, n, generator=g, dtype=torch.float64), 1)
    return logits, phi, p, p.argmax(1)


def test_kl_term_matches_torch_kl_div_and_the_formula():
    logits, _, p, _ = batch()
    ours = common.kl_term(logits, p)
    reference = F.kl_div(torch.log_softmax(logits, 1), p, reduction="batchmean")
    assert torch.allclose(ours, reference)
    q = torch.softmax(logits, 1)
    by_hand = sum(sum(p[k, i] * math.log(p[k, i] / q[k, i]) for i in range(10))
                  for k in range(6)) / 6
    assert abs(ours.item() - by_hand) < 1e-10


def test_kl_term_is_zero_when_the_output_matches_p():
    _, _, p, _ = batch()
    assert common.kl_term(p.log(), p).abs() < 1e-12


def test_ce_term_is_minus_log_probability_of_the_label():
    logits, _, _, y = batch()
    q = torch.softmax(logits, 1)
    by_hand = -sum(math.log(q[k, y[k]]) for k in range(6)) / 6
    assert abs(common.ce_term(logits, y).item() - by_hand) < 1e-10


def test_ce_term_with_a_cap_stops_at_that_probability():
    logits, _, _, y = batch(N=8)
    q = torch.softmax(logits, 1)
    q_y = [q[k, y[k]].item() for k in range(8)]
    cap = sorted(q_y)[4]                                 # about half the samples are above it
    by_hand = sum(max(0.0, math.log(cap / v)) for v in q_y) / 8
    assert abs(common.ce_term(logits, y, cap).item() - by_hand) < 1e-10
    assert by_hand > 0
    # a sample at or above the cap is pushed no further: its logits get no gradient
    leaf = logits.clone().requires_grad_(True)
    common.ce_term(leaf, y, cap).backward()
    for k in range(8):
        assert (leaf.grad[k].abs().max() == 0) == (q_y[k] >= cap)
    assert common.ce_term(logits, y, 1.0).item() == common.ce_term(logits, y).item()


def test_cosine_term_matches_an_explicit_double_loop():
    _, phi, _, _ = batch(N=7)
    N = len(phi)
    total = 0.0
    for i in range(N):
        for j in range(N):
            if i != j:
                a, b = phi[i], phi[j]
                total += (a @ b / (a.norm() * b.norm())).item()
    assert abs(common.cosine_term(phi).item() - total / (N * (N - 1))) < 1e-10


def test_cosine_term_within_classes_averages_only_pairs_of_one_label():
    _, phi, _, _ = batch(N=9)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 3, 1, 2])                 # label 3 alone: no pair
    pairs = [(i, j) for i in range(9) for j in range(9) if i != j and y[i] == y[j]]
    cos = [(phi[i] @ phi[j] / (phi[i].norm() * phi[j].norm())).item() for i, j in pairs]
    assert abs(common.cosine_term(phi, y).item() - sum(cos) / len(cos)) < 1e-6
    # one picture per label: a collapsed row
    base = torch.randn(4, 6)
    assert (abs(common.cosine_term(base[y], y).item() - 1) < 1e-5
            < 1 - common.cosine_term(base[y]).item())


def test_cosine_term_of_identical_features_is_one_and_flattens_maps():
    phi = torch.randn(1, 3, 4, 4).repeat(5, 1, 1, 1)
    assert abs(common.cosine_term(phi).item() - 1.0) < 1e-6


def test_tv_term_of_a_constant_image_is_zero_and_of_a_checkerboard_is_two():
    assert common.tv_term(torch.full((2, 1, 8, 8), 0.3)) == 0
    board = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2
    assert abs(common.tv_term(board.float()[None, None]).item() - 2.0) < 1e-6


def test_mode_seeking_term_matches_a_loop_over_pairs_of_one_label():
    g = torch.Generator().manual_seed(3)
    x, z, y = (torch.rand(7, 3, 4, 4, generator=g), torch.randn(7, 5, generator=g),
               torch.tensor([0, 1, 0, 2, 1, 0, 3]))
    ratios = [(x[i] - x[j]).abs().mean() / (z[i] - z[j]).abs().mean()
              for i in range(7) for j in range(7) if i != j and y[i] == y[j]]
    # 3 x 2 pairs of label 0, 2 of label 1
    assert len(ratios) == 8
    want = 1 / (sum(ratios) / len(ratios) + 1e-5)
    assert abs(common.mode_seeking_term(x, z, y).item() - want.item()) < 1e-4


def test_mode_seeking_term_falls_as_pictures_of_one_class_differ_and_reaches_x():
    z, y = torch.randn(4, 6), torch.tensor([0, 0, 1, 1])
    same = torch.full((4, 1, 5, 5), 0.5) + 0.01 * torch.randn(4, 1, 5, 5)
    apart = same + torch.tensor([0.3, -0.3, 0.3, -0.3])[:, None, None, None]
    assert common.mode_seeking_term(apart, z, y) < common.mode_seeking_term(same, z, y) / 5
    x = apart.clone().requires_grad_(True)
    common.mode_seeking_term(x, z, y).backward()
    assert x.grad.abs().sum() > 0
    assert common.mode_seeking_term(x, z, torch.arange(4)) == 0   # no pair of one label: no term


def test_feature_statistics_keep_a_small_spread_under_a_large_mean():
    # a channel of mean 30 and std 0.01 (such channels occur in f's fully connected layer):
    # E[a^2] - E[a]^2 in float32 loses its variance entirely, and can make it negative
    g = torch.Generator().manual_seed(0)
    y = torch.arange(6000) % 2
    x = torch.stack([30 + 0.01 * torch.randn(6000, generator=g),            # the hard channel
                     0.5 + torch.randn(6000, generator=g).abs()], 1)        # an easy one
    x[y == 1, 0] += 5                                                        # class 1: mean 35
    f = nn.Module()
    f.features = nn.Sequential(nn.ReLU())                         # phi = x, one activation layer
    (mu, var), = common.feature_statistics(f, x, y, 2, batch=1000)
    for c in range(2):
        ref = x[y == c].double()
        assert torch.allclose(mu[c].double(), ref.mean(0), rtol=1e-6)
        assert torch.allclose(var[c].double(), ref.var(0, unbiased=False), rtol=1e-3)
    # all classes together, each weighing the same: the variance of the pooled values
    (m_all, v_all), = common.mixture_statistics([(mu, var)])
    assert torch.allclose(v_all[0].double(), x.double().var(0, unbiased=False), rtol=1e-3)
