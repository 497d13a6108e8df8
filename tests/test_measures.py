"""Fidelity beside variety (precision, density) and like-for-like, seeded real references: each
checked against the published definitions, written here one point at a time."""
import collections

import pytest
import torch

import common
import measure


def dist(a, b):
    return sum((float(u) - float(v)) ** 2 for u, v in zip(a, b)) ** 0.5


def radius(points, i, k):
    """The distance of points[i] to its k-th nearest other point."""
    return sorted(dist(points[i], q) for j, q in enumerate(points) if j != i)[k - 1]


def loop_precision(real, fake, k=3):
    """Kynkaanniemi et al. 2019: the share of fake points inside some real point's k-NN ball."""
    radii = [radius(real, i, k) for i in range(len(real))]
    return sum(any(dist(s, r) <= radii[i] for i, r in enumerate(real)) for s in fake) / len(fake)


def loop_density(real, fake, k=5):
    """Naeem et al. 2020: (1 / (k M)) sum over fakes j, reals i of 1[fake_j in real_i's ball]."""
    radii = [radius(real, i, k) for i in range(len(real))]
    inside = sum(dist(s, r) <= radii[i] for s in fake for i, r in enumerate(real))
    return inside / (k * len(fake))


def test_precision_and_density_on_points_counted_by_hand():
    # balls with k = 2: (0,0) radius 3, (2,0) radius sqrt 13, (0,3) radius sqrt 13, the outlier
    # (10,0) radius 10.  (1,1) lies in all 4 balls, (0,-2.5) in the first two, (6,5) only in the
    # outlier's, (20,20) in none: precision 3/4, density (4 + 2 + 1 + 0) / (2 * 4) = 7/8
    real = torch.tensor([[0.0, 0], [2, 0], [0, 3], [10, 0]])
    fake = torch.tensor([[1.0, 1], [0, -2.5], [6, 5], [20, 20]])
    assert measure.precision(real, fake, k=2) == pytest.approx(3 / 4, abs=1e-12)
    assert measure.density(real, fake, k=2) == pytest.approx(7 / 8, abs=1e-12)
    assert loop_precision(real, fake, 2) == 3 / 4 and loop_density(real, fake, 2) == 7 / 8


def test_precision_and_density_match_their_definitions_computed_point_by_point():
    torch.manual_seed(0)
    real, fake = torch.randn(40, 3), torch.randn(30, 3) * 1.5 + 0.4     # some off the real
    p, d = loop_precision(real, fake), loop_density(real, fake)
    assert measure.precision(real, fake) == pytest.approx(p, abs=1e-12)
    assert measure.density(real, fake) == pytest.approx(d, abs=1e-12)
    assert 0 < p < 1 and 0 < d and d != p                    # the case is not trivial


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussians_too_spread_have_recall_without_precision_and_alike_have_both(seed):
    # real N(0, I) in 32 dimensions; samples N(0, s^2 I).  s = 1.5: the samples' balls swallow
    # the real (recall ~1) while the samples lie off the real (precision, density ~0.03);
    # s = 1: ~0.7 on both, density ~1
    draw = torch.Generator().manual_seed(seed)
    real = torch.randn(500, 32, generator=draw)
    wide = 1.5 * torch.randn(500, 32, generator=draw)
    assert measure.recall(real, wide) > 0.95
    assert measure.precision(real, wide) < 0.2 and measure.density(real, wide) < 0.2
    alike = torch.randn(500, 32, generator=draw)
    assert measure.recall(real, alike) > 0.5 and measure.precision(real, alike) > 0.5
    assert 0.7 < measure.density(real, alike) < 1.3


def test_variety_gives_precision_and_density_per_class_beside_their_real_reference():
    torch.manual_seed(2)
    n = 2
    real_labels = torch.arange(n).repeat_interleave(60)             # sorted by class
    real = torch.randn(120, 4) + real_labels[:, None].float() * 10
    fake_labels = torch.tensor([0] * 20 + [1] * 50)
    fake = torch.randn(70, 4) * 1.3 + fake_labels[:, None].float() * 10
    v = measure.variety(fake, fake_labels, real, real_labels, n)
    expected = {"precision": [], "precision_real": [], "density": [], "density_real": []}
    for c, m in ((0, 20), (1, 30)):                                  # m: the fewest of the three
        a = real[0::2][real_labels[0::2] == c][:m]
        b = real[1::2][real_labels[1::2] == c][:m]
        f = fake[fake_labels == c][:m]
        expected["precision"].append(loop_precision(a, f))
        expected["precision_real"].append(loop_precision(a, b))
        expected["density"].append(loop_density(a, f))
        expected["density_real"].append(loop_density(a, b))
    assert v["per_class_precision"] == pytest.approx(expected["precision"])
    assert v["per_class_density"] == pytest.approx(expected["density"])
    for key, values in expected.items():
        assert v[key] == pytest.approx(sum(values) / n), key
    assert v["precision"] != v["precision_real"]


class PixelJudge(torch.nn.Module):
    """Features: the pixels themselves."""
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Flatten()


def labelled_data(n=4, per=100):
    """Images whose first pixel tells the label (test set sorted by class, as CIFAR-10's)."""
    def images(labels):
        x = torch.rand(len(labels), 1, 3, 3)
        x[:, 0, 0, 0] = labels.float()
        return x
    y_tr, y_te = torch.arange(n).repeat(3 * per), torch.arange(n).repeat_interleave(per)
    return {"x_train": images(y_tr), "y_train": y_tr, "x_test": images(y_te), "y_test": y_te}


def test_frechet_references_are_like_for_like_at_the_samples_size(monkeypatch):
    # every Frechet distance (samples, real reference, stand-ins) against one and the same real
    # set; the real reference as many test images of each label as the samples, none of them in
    # that set
    torch.manual_seed(0)
    data, judge = labelled_data(), PixelJudge()
    labels = torch.tensor([0] * 30 + [1] * 20 + [2] * 30 + [3] * 40)
    psi = torch.rand(len(labels), 9)
    real_feats = measure.features_of(judge, data["x_test"])
    calls, frechet = [], measure.frechet_distance
    monkeypatch.setattr(measure, "frechet_distance",
                        lambda a, b: calls.append((a, b)) or frechet(a, b))
    scores = measure.frechet_scores(psi, labels, judge, data, real_feats, 4)
    assert len(calls) == 2 + len(scores["frechet_reference"])
    against = calls[0][1]
    assert calls[0][0] is psi and all(torch.equal(b, against) for _, b in calls)
    assert len(against) == len(real_feats) // 2
    assert torch.bincount(against[:, 0].long()).tolist() == [50] * 4      # every label halved
    reference = calls[1][0]
    assert torch.bincount(reference[:, 0].long()).tolist() == [30, 20, 30, 40]   # as the samples
    rows = {tuple(r) for r in against.tolist()}
    assert not any(tuple(r) in rows for r in reference.tolist())         # from the other half
    assert len({tuple(r) for r in reference.tolist()}) == len(labels)     # no test image twice
    assert all(len(a) == len(labels) for a, _ in calls[2:])               # stand-ins too


def test_frechet_references_are_seeded_whatever_the_global_random_state():
    data, judge = labelled_data(), PixelJudge()
    labels = torch.arange(4).repeat_interleave(30)
    psi = torch.rand(len(labels), 9)
    real_feats = measure.features_of(judge, data["x_test"])
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        runs.append(measure.frechet_scores(psi, labels, judge, data, real_feats, 4))
    assert runs[0] == runs[1]
    stand_ins = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        stand_ins.append(measure.stand_in_images(data, labels, 4))
    assert all(stand_ins[0][name].equal(stand_ins[1][name]) for name in stand_ins[0])


def test_margin_scores_draw_the_same_samples_whatever_the_global_random_state():
    torch.manual_seed(0)
    G = common.Generators([common.Generator(latent_dim=8, hidden=8, width=16)])
    f, judge = measure.Judge(1, 10, 4).eval(), measure.Judge(1, 10, 4).eval()
    y = torch.arange(10).repeat_interleave(20)                   # sorted by class
    data = {"x_train": torch.rand(200, 1, 28, 28), "x_test": torch.rand(200, 1, 28, 28),
            "y_test": y}
    real_feats = measure.features_of(judge, data["x_test"])
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        runs.append(measure.margin_scores(G, f, judge, data, 10, 1.0, 6, real_feats))
        assert torch.equal(torch.get_rng_state(), state)                # left as it was
    assert runs[0] == runs[1]
    assert {"recall", "precision", "coverage", "density"} <= set(runs[0])
    assert runs[0]["precision"] is not None and runs[0]["density"] is not None


def test_summary_reads_margin_zero_as_zero_and_pairs_variety_with_fidelity(capsys):
    inv = collections.defaultdict(lambda: 0.5, recall=0.11, recall_real=0.22, precision=0.33,
                                  precision_real=0.44, coverage=0.55, coverage_real=0.66,
                                  density=0.77, density_real=0.88, frechet_reference={})
    row = {"target_accuracy": 1.0, "judge_accuracy": 0.9, "diversity_ratio": 0.8, "recall": 0.7,
           "precision": 0.6, "coverage": None, "density": 0.4}
    metrics = {"classifier": {"test_accuracy": 0.9}, "judge": {"test_accuracy": 0.9},
               "inversion": inv, "inversion_by_margin": {"natural": row}, "distillation": {},
               "seconds": {"total": 1.0}, "config": {"margin": 0.0}}
    measure.print_summary(metrics)
    out = capsys.readouterr().out
    assert "samples at margin 0.0" in out and "natural)" not in out
    lines = out.splitlines()
    recall = next(line for line in lines if "recall, k=3" in line)
    coverage = next(line for line in lines if "coverage, k=5" in line)
    assert [w for w in recall.split() if w[0].isdigit()][-4:] == ["0.1100", "0.2200", "0.3300",
                                                                   "0.4400"]
    assert "precision" in recall and "density" in coverage and "0.8800" in coverage
    assert "precision" in out.split("by sampling margin")[1].splitlines()[0]
    margin_row = lines[-1].split()
    assert margin_row[0] == "natural" and margin_row[4:] == ["0.700", "0.600", "-", "0.400"]
    metrics["config"]["margin"] = None
    measure.print_summary(metrics)
    assert "samples at margin natural" in capsys.readouterr().out
