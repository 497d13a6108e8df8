"""One inversion step: G's weights move, the frozen classifier's do not and get no gradient."""
import math

import pytest
import torch

import common
from conftest import load_script


def make(script_name, **overrides):
    mod = load_script(script_name)
    args = mod.parse_args(["--fake-data", "--device", "cpu", "--batch-size", "8", "--width", "16",
                           "--latent-dim", "8", "--hidden", "8"]
                          + [a for k, v in overrides.items()
                             for a in [f"--{k}"] + [str(v)] * (v is not True)])
    f = mod.Classifier(len(mod.CLASSES)).eval().requires_grad_(False)
    stats = common.feature_statistics(f, torch.rand(20, *mod.SHAPE), torch.arange(20) % 10, 10)
    G = mod.build_generator(args)
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    return mod, args, f, stats, G, opt


def check_one_step(script_name, **overrides):
    torch.manual_seed(0)
    mod, args, f, stats, G, opt = make(script_name, **overrides)
    f_before = {k: v.clone() for k, v in f.state_dict().items()}
    G_before = {k: v.clone() for k, v in G.named_parameters()}
    out = mod.inversion_step(G, f, opt, args, stats, torch.device("cpu"))
    assert all(t.shape == () and torch.isfinite(t) and not t.requires_grad for t in out.values())
    terms = {name: t.item() for name, t in out.items()}
    # each term as it enters the loss: L_inv's three weighted terms first, then L_inv
    assert list(terms)[:5] == ["alpha*L_KL", "beta*L_CE", "gamma*L_cos", "L_inv", "robust"]
    assert list(terms)[-2:] == ["loss", "f(x)=y"] and 0 <= terms["f(x)=y"] <= 1
    # the named terms add up as the paper writes L_inv, and the priors come on top of it
    L_inv = terms["alpha*L_KL"] + terms["beta*L_CE"] + terms["gamma*L_cos"]
    assert terms["L_inv"] == pytest.approx(L_inv, rel=1e-5)
    priors = [v for k, v in terms.items()
              if k not in ("loss", "L_inv", "alpha*L_KL", "beta*L_CE", "gamma*L_cos", "f(x)=y")]
    assert terms["loss"] == pytest.approx(terms["L_inv"] + sum(priors), rel=1e-5)
    for name, value in f.state_dict().items():
        assert torch.equal(value, f_before[name]), f"classifier {name} changed"
    assert all(p.grad is None for p in f.parameters()), "a gradient reached the classifier"
    assert all(not p.requires_grad for p in f.parameters())
    changed = [n for n, p in G.named_parameters() if not torch.equal(p, G_before[n])]
    assert len(changed) == len(G_before), (
        f"unchanged generator weights: {set(G_before) - set(changed)}")
    return terms


def test_one_step_trains_the_generator_only_28px():
    terms = check_one_step("fashion_inversion", paper=True, **{"num-generators": 4})
    assert terms["robust"] == 0 and terms["loss"] == terms["L_inv"]       # --paper: L_inv alone
    assert set(terms) == {"loss", "L_inv", "alpha*L_KL", "beta*L_CE", "gamma*L_cos", "robust",
                          "f(x)=y"}


def test_one_step_trains_the_generator_only_32px():
    terms = check_one_step("cifar10_inversion", **{"num-generators": 4})   # a batch of 8: 2 each
    assert terms["robust"] > 0 and terms["stats"] > 0 and terms["bn_stats"] > 0   # the defaults


def test_robust_and_prior_terms_also_leave_the_classifier_alone():
    terms = check_one_step("mnist_inversion", **{"robust-eps": 0.1, "tv": 0.5, "stats": 0.1})
    assert terms["robust"] > 0 and terms["tv"] > 0 and terms["stats"] > 0


def test_the_colour_levers_train_the_generator_only():
    terms = check_one_step("cifar10_inversion", **{"view-shift": 2, "bn-stats": 0.1,
                                                   "upsample": "resize", "robust-eps": 0,
                                                   "stats": 0, "mode-seeking": 0,
                                                   "generator-stats": 0, "num-generators": 1})
    assert terms["bn_stats"] > 0 and "stats" not in terms          # the batch-norm prior alone
    assert terms["loss"] == pytest.approx(terms["L_inv"] + terms["bn_stats"], rel=1e-5)


def test_the_levers_against_prototypes_train_the_generator_only():
    terms = check_one_step("svhn_inversion", **{"num-generators": 2, "generator-stats": 0.5,
                                                "confidence-cap": 0.6})
    assert terms["generator_stats"] > 0 and terms["stats"] > 0


def test_twins_are_neighbours_in_one_generators_part():
    mod = load_script("svhn_inversion")
    G = mod.build_generator(mod.parse_args(["--num-generators", "2", "--width", "8"]))
    first = G.twins(7, torch.device("cpu"))               # parts [0, 4) and [4, 7)
    assert first.tolist() == [0, 0, 2, 2, 4, 4, 6]        # the odd part's last image alone
    owner = G.owners(7, torch.device("cpu"))
    assert torch.equal(owner[first], owner)               # a twin never crosses to another G_k


def test_twins_share_p_and_mode_seeking_compares_one_label_of_one_generator(monkeypatch):
    seen = {}
    forward = common.Generators.forward

    def recording(G, z, p, H):
        x = forward(G, z, p, H)                           # once: dropout draws anew each call
        seen.update(z=z, p=p, x=x.detach())
        return x
    monkeypatch.setattr(common.Generators, "forward", recording)
    labels = torch.tensor([0, 5, 1, 5, 0, 5, 1, 5])       # the twins' draws: labels 0 1 | 0 1
    monkeypatch.setattr(common, "sample_conditioning",
                        lambda N, n, device: common.conditioning_for_labels(labels, n))
    torch.manual_seed(0)
    mod, args, f, stats, G, opt = make("cifar10_inversion", twins=True, **{"num-generators": 2})
    terms = mod.inversion_step(G, f, opt, args, stats, torch.device("cpu"))
    z, p, x = seen["z"], seen["p"], seen["x"]             # a batch of 8: parts of 4
    assert all(torch.equal(p[i], p[i + 1]) and not torch.equal(z[i], z[i + 1])
               for i in range(0, 8, 2))                   # one p, two z
    y = p.argmax(1).tolist()
    assert y == [0, 0, 1, 1, 0, 0, 1, 1]                  # each label in both generators' parts
    ratios = [(x[i] - x[j]).abs().mean().item() / (z[i] - z[j]).abs().mean().item()
              for i in range(8) for j in range(8)
              if i != j and y[i] == y[j] and i // 4 == j // 4]   # one label, one generator
    by_hand = args.mode_seeking / (sum(ratios) / len(ratios) + 1e-5)
    assert terms["mode_seeking"].item() == pytest.approx(by_hand, rel=1e-4)


def test_bn_term_is_zero_at_the_running_statistics_and_matches_the_formula():
    torch.manual_seed(0)
    f = load_script("cifar10_inversion").Classifier(10, width=8).eval().requires_grad_(False)
    x = torch.rand(16, 3, 32, 32)
    _, _, bn = common.activations(f.features, x)
    assert len(bn) == 6 and all(isinstance(layer, torch.nn.BatchNorm2d) for _, layer in bn)
    expected = sum((reference_moments(a)[0] - layer.running_mean).norm() +
                   (reference_moments(a)[1] - layer.running_var).norm() for a, layer in bn)
    assert torch.allclose(common.bn_term(bn), expected, rtol=1e-5)
    for a, layer in bn:                                  # running statistics set to this batch's
        layer.running_mean.copy_(reference_moments(a)[0])
        layer.running_var.copy_(reference_moments(a)[1])
    assert common.bn_term(bn) < 1e-4


def test_bn_stats_on_a_classifier_without_batch_norm_is_refused_before_f_trains(tmp_path, capsys,
                                                                                monkeypatch):
    mod = load_script("mnist_inversion")
    monkeypatch.setattr(mod, "train_classifier",
                        lambda *a: pytest.fail("f trained before --bn-stats was refused"))
    with pytest.raises(SystemExit) as e:
        mod.main(["--fake-data", "--dry-run", "--device", "cpu", "--bn-stats", "1",
                  "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--bn-stats needs batch norm" in err
    assert not (tmp_path / "classifier.pt").exists()
    colour = load_script("cifar10_inversion")               # f with batch norm: no complaint
    common.check_classifier(colour.Classifier(10), colour.SHAPE, 10,
                            colour.parse_args(["--bn-stats", "1"]))


def test_step_gradient_equals_the_gradient_of_the_paper_loss():
    torch.manual_seed(0)
    mod, args, f, stats, G, opt = make("mnist_inversion", alpha=0.7, beta=1.3, gamma=2.0,
                                       **{"robust-eps": 0, "stats": 0, "tv": 0})
    G.eval()                                             # no dropout: same x twice
    torch.manual_seed(5)
    terms = mod.inversion_step(G, f, torch.optim.SGD(G.parameters(), lr=0.0), args, stats,
                               torch.device("cpu"))
    step_grads = [p.grad.clone() for p in G.parameters()]
    torch.manual_seed(5)                                  # same z, p in the same order
    z = torch.randn(args.batch_size, args.latent_dim)
    p, y, H = common.sample_conditioning(args.batch_size, 10, "cpu")
    x = G(z, p, H)
    phi = f.features(x)
    logits = f.head(phi)
    q = torch.softmax(logits, 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    ce = -q[torch.arange(len(y)), y].log().mean()
    u = phi / phi.norm(dim=1, keepdim=True)
    cos = ((u @ u.T).sum() - len(u)) / (len(u) * (len(u) - 1))
    G.zero_grad()
    (0.7 * kl + 1.3 * ce + 2.0 * cos).backward()
    # the log's terms are the paper's, weighted as they enter L_inv
    for name, term in (("alpha*L_KL", 0.7 * kl), ("beta*L_CE", 1.3 * ce), ("gamma*L_cos", 2 * cos)):
        assert terms[name].item() == pytest.approx(term.item(), rel=1e-5), name
    for a, b in zip(step_grads, [p.grad for p in G.parameters()]):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_robust_term_uses_a_perturbation_within_the_bound():
    torch.manual_seed(0)
    mod, args, f, stats, G, opt = make("mnist_inversion")
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    y = torch.arange(4)
    eps = 0.05
    term = common.robust_term(f, x, y, eps)
    assert term.requires_grad                            # gradient flows back to x (and so G)
    # the worst case within the bound is at least as bad as the clean image, to first order
    clean = torch.nn.functional.cross_entropy(f(x), y)
    assert term >= clean - 1e-6
    assert common.robust_term(f, x, y, 0.0).item() == 0                 # eps 0: no term
    # with a cap, the same worst case's CE less log(1 / cap), per sample, at least 0
    capped = common.robust_term(f, x, y, eps, cap=0.5)
    x_adv = common.worst_case(f, x, y, eps)
    per = torch.nn.functional.cross_entropy(f(x_adv), y, reduction="none")
    assert torch.allclose(capped, (per - math.log(2)).clamp_min(0).mean())


def reference_moments(a):
    """Per-channel mean and variance the plain way (torch.var), for comparison."""
    dims = [0] + list(range(2, a.dim()))
    return a.mean(dims), a.var(dims, unbiased=False)


def batch_moments(a):
    """stats_term's in-batch estimate, from its definition: per channel, the mean; the variance
    as the mean of each image's own variance over positions plus the unbiased variance (N - 1)
    of the image means (for (N, C) activations: the unbiased variance itself)."""
    image_means = a if a.dim() == 2 else a.mean((2, 3))              # (N, C)
    own = torch.zeros_like(image_means) if a.dim() == 2 else a.var((2, 3), unbiased=False)
    return image_means.mean(0), own.mean(0) + image_means.var(0, unbiased=True)


def test_stats_term_is_zero_at_the_data_statistics_and_grows_away_from_them():
    torch.manual_seed(0)
    mod = load_script("mnist_inversion")
    f = mod.Classifier(10).eval().requires_grad_(False)
    x, everyone = torch.rand(64, 1, 28, 28), torch.zeros(64, dtype=torch.long)     # one group: all
    stats = common.feature_statistics(f, x, everyone, 1, batch=16)   # chunked sums equal one pass
    _, acts, _ = common.activations(f.features, x)
    for (mu, var), a in zip(stats, acts):
        m, v = reference_moments(a)
        assert mu.shape == (1, a.shape[1])
        assert torch.allclose(mu[0], m, atol=1e-5) and torch.allclose(var[0], v, atol=1e-5)
    assert common.stats_term(acts, stats, everyone) < 1e-3
    _, far, _ = common.activations(f.features, x * 0.2)
    assert common.stats_term(far, stats, everyone) > 0.01


def test_generator_stats_term_holds_each_generator_to_all_classes_pooled():
    torch.manual_seed(0)
    mod = load_script("mnist_inversion")
    f = mod.Classifier(10).eval().requires_grad_(False)
    x_train, y_train = torch.rand(60, 1, 28, 28), torch.arange(60) % 10    # 6 of each class
    stats = common.feature_statistics(f, x_train, y_train, 10)
    pooled = common.feature_statistics(f, x_train, torch.zeros(60, dtype=torch.long), 1)
    for (mu, var), (mu_all, var_all) in zip(common.mixture_statistics(stats), pooled):
        assert torch.allclose(mu, mu_all, atol=1e-5) and torch.allclose(var, var_all, atol=1e-5)
    # a batch of 10 from K = 3 generators: parts of 4, 3 and 3 images, as Generators cuts it
    _, acts, _ = common.activations(f.features, torch.rand(10, 1, 28, 28))
    by_hand = 0.0
    for a, (mu_all, var_all) in zip(acts, pooled):
        for part in (a[:4], a[4:7], a[7:]):
            m, v = batch_moments(part)
            by_hand += ((m - mu_all[0]).norm() + (v - var_all[0]).norm()).item() / 3
    G = common.Generators([common.Generator(width=4, latent_dim=2, hidden=2) for _ in range(3)])
    owner = G.owners(10, torch.device("cpu"))
    assert owner.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert abs(common.generator_stats_term(acts, stats, owner, 3).item() - by_hand) < 1e-4 * by_hand


def test_per_class_statistics_match_each_class_computed_alone():
    torch.manual_seed(0)
    mod = load_script("mnist_inversion")
    f = mod.Classifier(10).eval().requires_grad_(False)
    y = torch.arange(3).repeat(20)                            # classes 0, 1, 2; none of 3
    x = torch.rand(60, 1, 28, 28) * (1 + y.view(-1, 1, 1, 1))  # classes differ in brightness
    stats = common.feature_statistics(f, x, y, n=4, batch=7)
    _, acts, _ = common.activations(f.features, x)
    for (mu, var), a in zip(stats, acts):
        assert mu.shape == var.shape == (4, a.shape[1])
        for c in range(3):
            m, v = reference_moments(a[y == c])
            assert torch.allclose(mu[c], m, atol=1e-4) and torch.allclose(var[c], v, atol=1e-4)
    # each class at its own statistics: ~0; the same images labelled with the wrong classes: not
    assert common.stats_term(acts, stats, y) < 1e-3
    assert common.stats_term(acts, stats, (y + 1) % 3) > 0.1
    # the term averages over the classes present: one class alone gives its own distance
    _, acts0, _ = common.activations(f.features, x[y == 0] * 0.5)
    one = common.stats_term(acts0, stats, torch.zeros(20, dtype=torch.long))
    expected = sum((batch_moments(a)[0] - mu[0]).norm()
                   + (batch_moments(a)[1] - var[0]).norm()
                   for a, (mu, var) in zip(acts0, stats))
    assert torch.allclose(one, expected, rtol=1e-4)


def test_worst_case_stays_in_the_ball_raises_the_loss_and_leaves_f_alone():
    torch.manual_seed(0)
    mod = load_script("fashion_inversion")
    f = mod.Classifier(10).eval()
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    x_adv = common.worst_case(f, x, y, 0.1)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in f.parameters())
    ce = torch.nn.functional.cross_entropy
    assert ce(f(x_adv), y) > ce(f(x), y)


def test_worst_case_from_a_random_start_stays_in_the_ball_and_differs_from_fgsm():
    torch.manual_seed(0)
    f = load_script("fashion_inversion").Classifier(10).eval()
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    x_rs = common.worst_case(f, x, y, 0.1, random_start=True)
    assert (x_rs - x).abs().max() <= 0.1 + 1e-6 and x_rs.min() >= 0 and x_rs.max() <= 1
    assert not torch.equal(x_rs, common.worst_case(f, x, y, 0.1))
    ce = torch.nn.functional.cross_entropy
    assert ce(f(x_rs), y) > ce(f(x), y)


def test_stats_terms_batch_variance_is_unbiased_for_the_datas_even_at_six_images():
    # the population: 4 channels of 3 x 3 maps, mean 30, spread between images (2) and within
    # them (0.5); batches of 6 images of one class, as --medium's 64 over 10 classes gives.  The
    # term is ||v - var|| + ..., so with mean and variance of the data given, it is zero exactly
    # when the batch's estimate v equals var: find v from the term along a line of variances
    torch.manual_seed(0)
    pop = 30 + 2 * torch.randn(100_000, 4, 1, 1) + 0.5 * torch.randn(100_000, 4, 3, 3)
    mu, var = reference_moments(pop)
    estimates, plain = [], []
    for _ in range(1500):
        a = pop[torch.randint(0, len(pop), (6,))]
        y = torch.zeros(6, dtype=torch.long)
        scales = torch.tensor([0.0, 1.0])                      # v from two evaluations:
        d = [common.stats_term([a], [(a.mean((0, 2, 3))[None], s * var[None])], y)
             for s in scales]                                  # ||v||, ||v - var||
        estimates.append(batch_moments(a)[1])
        plain.append(a.var((0, 2, 3), unbiased=False))
        assert torch.allclose(d[0], estimates[-1].norm(), rtol=1e-4)
        assert torch.allclose(d[1], (estimates[-1] - var).norm(), rtol=1e-4)
    mean_estimate, mean_plain = torch.stack(estimates).mean(0), torch.stack(plain).mean(0)
    assert ((mean_estimate / var) - 1).abs().max() < 0.05          # unbiased within noise
    assert ((mean_plain / var) - 1).max() < -0.1                  # the plain one falls short


def test_stats_term_stays_in_float32_under_bfloat16_autocast():
    # a large mean and a tiny variance, as in f's fully connected layer: E[a^2] - E[a]^2 in
    # bfloat16 would lose the variance entirely (an error of ~0.4 against a variance of 1e-4)
    torch.manual_seed(0)
    y = torch.arange(4).repeat(16)
    acts = [10 + 0.01 * torch.randn(64, 32), 3 + 0.1 * torch.randn(64, 8, 5, 5)]
    stats = [(torch.full((4, a.shape[1]), 10.0), torch.full((4, a.shape[1]), 1e-4)) for a in acts]
    plain = common.stats_term(acts, stats, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = common.stats_term(acts, stats, y)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=1e-5, atol=1e-6)


class FakeCuda:
    """Enough of torch.cuda for GraphedStep on a CPU: streams that do nothing, and a graph whose
    recording fails the way a host sync fails under capture."""

    class Stream:
        def wait_stream(self, other):
            pass

    def __init__(self):
        self.recorded = 0

    def graph(self, g):
        fake = self

        class Recording:
            def __enter__(self):
                fake.recorded += 1

            def __exit__(self, *exc):
                raise RuntimeError("operation not permitted when stream is capturing\nmore")
        return Recording()


def test_a_step_the_cuda_graph_cannot_record_is_said_once_and_run_without_it(monkeypatch, capsys):
    import contextlib
    fake, calls = FakeCuda(), []
    monkeypatch.setattr(torch.cuda, "Stream", FakeCuda.Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", FakeCuda.Stream)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", object)
    monkeypatch.setattr(torch.cuda, "graph", fake.graph)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    step = common.GraphedStep(lambda: calls.append(1) or len(calls), warmup=2)
    outs = [step() for _ in range(6)]
    assert fake.recorded == 1 and step.graph is False            # one try at recording
    # 6 steps run, + the failed recording's
    assert outs[-1] == len(calls) == 7
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "cannot be recorded as a CUDA graph" in out[0] and "going on" in out[0]
