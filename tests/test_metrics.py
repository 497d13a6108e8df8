import argparse

import pytest
import torch

import common
import measure


def test_collapsed_batch_has_zero_diversity_and_distinct_images_positive():
    x = torch.rand(1, 1, 28, 28).repeat(10, 1, 1, 1)
    assert measure.mean_pairwise_distance(x) == 0.0
    a = torch.zeros(2, 1, 2, 2)
    a[1] = 1.0                                            # distance sqrt(4) = 2 for the one pair
    assert abs(measure.mean_pairwise_distance(a) - 2.0) < 1e-12


def test_frechet_distance_of_identical_sets_is_zero_and_of_a_shift_is_its_square():
    torch.manual_seed(0)
    a = torch.randn(500, 6)
    assert measure.frechet_distance(a, a) < 1e-6
    shift = torch.tensor([3.0, 0, 0, 0, 0, 0])
    assert abs(measure.frechet_distance(a, a + shift) - 9.0) < 1e-6


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    # independent Gaussians, variances s1 and s2 per dimension: sum (s1 + s2 - 2 sqrt(s1 s2))
    torch.manual_seed(1)
    a = torch.randn(200000, 2) * torch.tensor([1.0, 2.0])
    b = torch.randn(200000, 2) * torch.tensor([3.0, 2.0])
    expected = (1 + 9 - 2 * 3) + (4 + 4 - 2 * 4)
    assert abs(measure.frechet_distance(a, b) - expected) < 0.1


def test_a_sample_that_is_a_training_image_has_nn_distance_exactly_zero():
    # exactly: the matrix-product form of the distance (torch.cdist's fast path) rounds an image's
    # distance to itself to about 0.008 on some CPUs, so the distance must come from differences
    torch.manual_seed(0)
    train = torch.rand(500, 1, 28, 28)
    samples = torch.stack([train[7], train[31], train[7] + 0.1])
    d, idx = measure.nearest_neighbours(samples, train)
    assert d[0].item() == 0.0 and d[1].item() == 0.0
    assert idx.tolist()[:2] == [7, 31]
    assert abs(d[2].item() - 0.1 * 28) < 1e-3             # ||0.1 * ones(784)|| = 2.8


def test_nearest_neighbours_match_a_brute_force_search():
    torch.manual_seed(1)
    train, samples = torch.rand(300, 3, 4, 4), torch.rand(40, 3, 4, 4)
    d, idx = measure.nearest_neighbours(samples, train, batch=7)
    for k in range(len(samples)):
        dists = [(samples[k] - t).pow(2).sum().sqrt().item() for t in train]
        assert idx[k].item() == min(range(len(train)), key=dists.__getitem__)
        assert abs(d[k].item() - min(dists)) < 1e-5


def test_inversion_metrics_on_real_images_score_like_real_data():
    # samples that ARE test images: diversity ratio 1, classifiers that read labels perfectly
    torch.manual_seed(0)
    x = torch.rand(200, 1, 8, 8)
    y = torch.arange(200) % 10

    class Oracle(torch.nn.Module):                       # reads the label hidden in pixel 0
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Flatten()

        def forward(self, img):
            return torch.nn.functional.one_hot((img[:, 0, 0, 0] * 10).long(), 10).float() * 20
    x[:, 0, 0, 0] = (y.float() + 0.5) / 10
    data = {"x_train": x, "y_train": y, "x_test": x, "y_test": y}
    m = measure.inversion_metrics(x, y, Oracle(), Oracle(), data, 10,
                                  measure.features_of(Oracle(), x))
    assert m["target_accuracy"] == 1.0 and m["judge_accuracy"] == 1.0
    assert abs(m["diversity_ratio"] - 1.0) < 1e-9
    assert m["nn_distance"] < 1e-3
    assert abs(m["feature_cosine"] - m["feature_cosine_real"]) < 1e-9
    assert len(m["per_class_target_accuracy"]) == 10


def test_the_second_judge_is_another_family_and_scores_in_its_own_features():
    first, second = measure.Judge(1, 10, 8), measure.SecondJudge(1, 10, 8)
    assert common.architecture(first) != common.architecture(second)
    assert any(isinstance(m, measure.Residual) for m in second.modules())
    assert not any(isinstance(m, measure.Residual) for m in first.modules())
    torch.manual_seed(0)
    x, y = torch.rand(240, 1, 8, 8), torch.arange(240) % 10
    x[:, :, 0, 0] = y[:, None].float() / 10                        # the label in pixel 0
    order = torch.randperm(240)
    data = {"x_test": x[order], "y_test": y[order]}
    samples = x + 0.3 * torch.rand_like(x)

    class Reader(torch.nn.Module):                   # features: pixel 0 and one more; logits
        def __init__(self, other):
            super().__init__()
            self.other = other
            self.features = lambda img: img.flatten(1)[:, [0, other]]

        def forward(self, img):
            return torch.nn.functional.one_hot((img[:, 0, 0, 0] * 10 + 0.5).long() % 10, 10)
    for other in (5, 40):
        judge = Reader(other)
        got = measure.second_judge_metrics(samples, y, judge, data, 10)
        # from the definitions' code, in these features: recall and the rest as for the first
        want = measure.variety(judge.features(samples), y, judge.features(data["x_test"]),
                               data["y_test"], 10)
        assert None not in got.values()
        assert {k: got[k] for k in want if k in got} == pytest.approx(
            {k: want[k] for k in got if k in want})
        assert got["judge_accuracy"] == pytest.approx(
            ((judge(samples).argmax(1)) == y).float().mean().item())
    assert measure.second_judge_metrics(samples, y, Reader(5), data, 10) != got   # its features


def test_feature_cosine_measures_what_the_cosine_term_trains():
    torch.manual_seed(0)
    phi = torch.randn(30, 16) + 2.0
    assert abs(measure.mean_pairwise_cosine(phi) - common.cosine_term(phi).item()) < 1e-5
    assert abs(measure.mean_pairwise_cosine(phi[:1].repeat(5, 1)) - 1.0) < 1e-6   # collapsed: 1


def test_frechet_references_draw_per_class_and_order_noise_and_collapse():
    # features = the pixels themselves, so each reference's distance can be reasoned about:
    # training images scored against themselves ~ 0; pixel noise raises it, more noise more;
    # every sample replaced by its class's mean image loses all within-class variance
    torch.manual_seed(0)
    n, N = 4, 8000
    y = torch.arange(N) % n
    x = (torch.rand(N, 1, 3, 3) * 0.5 + y.float()[:, None, None, None] / 8).clamp(0, 1)

    class PixelJudge(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Flatten()
    data = {"x_train": x, "y_train": y}
    labels = torch.arange(n).repeat_interleave(1000)
    ref = measure.frechet_references(PixelJudge(), labels, data, x.flatten(1), n)
    assert set(ref) == {"training_images", "training_images_noise_0.05",
                        "training_images_noise_0.1", "class_mean_images"}
    assert ref["training_images"] < 0.01
    assert (ref["training_images"] < ref["training_images_noise_0.05"]
            < ref["training_images_noise_0.1"])
    # mean images: covariance b u u^T (u = ones / 3, the class offsets y / 8 shift all 9 pixels
    # alike), against b u u^T + w I with w = Var U(0, 0.5) = 0.25 / 12; Frechet distance in
    # closed form: 2b + 9w - 2 sqrt(b (b + w))
    b, w = 9 * torch.tensor([0, 1, 2, 3.0]).div(8).var(unbiased=False).item(), 0.25 / 12
    assert abs(ref["class_mean_images"] - (2 * b + 9 * w - 2 * (b * (b + w)) ** 0.5)) < 0.01


def test_pieces_count_connected_parts_and_specks():
    x = torch.zeros(3, 1, 8, 8)
    x[0, 0, 1:6, 2] = 1                                  # one stroke
    x[1, 0, 1:6, 2] = 1
    x[1, 0, 7, 7] = 1                                    # ... and a speck
    # diagonal neighbours: one piece (8-connected)
    x[2, 0, 1, 1] = x[2, 0, 2, 2] = 1
    x[2, 0, 5:8, 5:8] = 0.4                              # below the threshold: nothing
    count, specks = measure.pieces(x)
    assert count.tolist() == [1, 2, 1] and specks.tolist() == [0, 1, 1]


def test_ripple_is_the_mean_second_difference_and_sees_stripes_across_an_image():
    torch.manual_seed(0)
    smooth = torch.rand(4, 1, 1, 1) * torch.linspace(0, 1, 6).expand(4, 1, 6, 6)   # ramps
    striped = smooth.clone()
    striped[..., 1::2, :] += 0.5                         # every other row brighter
    labels = torch.tensor([0, 1, 0, 1])
    data = {"x_test": torch.rand(10, 1, 6, 6), "y_test": torch.arange(10) % 2}
    out = measure.ripple(striped, measure.real_like(labels, data))
    # by hand: each interior pixel's |x[i+1] - 2 x[i] + x[i-1]|, averaged
    x = data["x_test"][[0, 2, 1, 3]]                     # two of each label, as the samples
    down = sum(abs(float(x[n, 0, i + 1, j] - 2 * x[n, 0, i, j] + x[n, 0, i - 1, j]))
               for n in range(4) for i in range(1, 5) for j in range(6)) / (4 * 4 * 6)
    across = sum(abs(float(x[n, 0, i, j + 1] - 2 * x[n, 0, i, j] + x[n, 0, i, j - 1]))
                 for n in range(4) for i in range(6) for j in range(1, 5)) / (4 * 6 * 4)
    assert abs(out["real_down"] - down) < 1e-6 and abs(out["real_across"] - across) < 1e-6
    # a ramp has no second difference; the stripes add 1.0 down each column, nothing across
    assert measure.ripple(smooth, measure.real_like(labels, data))["samples_down"] < 1e-6
    assert abs(out["samples_down"] - 1.0) < 1e-5 and out["samples_across"] < 1e-6


def loop_recall_and_coverage(real, fake, k_recall=3, k_coverage=5):
    """The definitions, one point at a time, with plain Python distances."""
    def dist(a, b):
        return sum((float(u) - float(v)) ** 2 for u, v in zip(a, b)) ** 0.5

    def kth(points, i, k):
        return sorted(dist(points[i], q) for j, q in enumerate(points) if j != i)[k - 1]
    radii_fake = [kth(fake, i, k_recall) for i in range(len(fake))]
    radii_real = [kth(real, i, k_coverage) for i in range(len(real))]
    rec = sum(any(dist(r, s) <= radii_fake[j] for j, s in enumerate(fake))
              for r in real) / len(real)
    cov = sum(min(dist(r, s) for s in fake) <= radii_real[i]
              for i, r in enumerate(real)) / len(real)
    return rec, cov


def test_recall_and_coverage_match_their_definitions_computed_point_by_point():
    torch.manual_seed(0)
    real, fake = torch.randn(40, 3), torch.randn(30, 3) * 0.6 + 0.4
    rec, cov = loop_recall_and_coverage(real, fake)
    assert measure.recall(real, fake) == pytest.approx(rec, abs=1e-12)
    assert measure.coverage(real, fake) == pytest.approx(cov, abs=1e-12)
    assert 0 < rec < 1 and 0 < cov < 1                   # the case is not trivial


def test_one_picture_recoloured_has_no_recall_however_far_its_colours_move():
    # the case pixel distance gets wrong: a class's samples are one point moved along one
    # direction (a colour change), spread as widely as the real images; recall stays near 0
    torch.manual_seed(1)
    real = torch.randn(200, 16)
    one = torch.randn(1, 16)
    recoloured = one + torch.linspace(-8, 8, 200)[:, None] * torch.eye(16)[0]
    assert measure.mean_pairwise_distance(recoloured) > 0.9 * measure.mean_pairwise_distance(real)
    assert measure.recall(real, recoloured) < 0.05 and measure.coverage(real, recoloured) < 0.2
    other_real = torch.randn(200, 16)                    # real against real: high on both
    assert measure.recall(real, other_real) > 0.5 and measure.coverage(real, other_real) > 0.8


def test_variety_uses_interleaved_halves_of_equal_size_and_skips_tiny_classes():
    torch.manual_seed(2)
    n = 3
    # sorted by class, as CIFAR-10's test set
    real_labels = torch.arange(n).repeat_interleave(60)
    real = torch.randn(180, 4) + real_labels[:, None].float() * 10
    fake_labels = torch.tensor([0] * 20 + [1] * 50 + [2] * 3)
    fake = torch.randn(73, 4) + fake_labels[:, None].float() * 10
    v = measure.variety(fake, fake_labels, real, real_labels, n)
    a0, b0 = real[0::2][real_labels[0::2] == 0][:20], real[1::2][real_labels[1::2] == 0][:20]
    assert v["per_class_recall"][0] == pytest.approx(loop_recall_and_coverage(a0, fake[:20])[0])
    assert v["per_class_coverage"][1] == pytest.approx(                    # m = 30: the half's size
        loop_recall_and_coverage(real[0::2][real_labels[0::2] == 1][:30], fake[20:50])[1])
    assert v["per_class_recall"][2] is None                                # 3 samples: not measured
    assert v["recall_real"] == pytest.approx(sum(loop_recall_and_coverage(
        real[0::2][real_labels[0::2] == c][:m], real[1::2][real_labels[1::2] == c][:m])[0]
        for c, m in ((0, 20), (1, 30))) / 2)
    assert v["recall"] == pytest.approx((v["per_class_recall"][0] + v["per_class_recall"][1]) / 2)
    assert b0.shape == a0.shape


def test_the_real_image_student_is_trained_once_per_f_and_its_score_reused(tmp_path, monkeypatch):
    # the student on real training images does not depend on G: judge.pt keeps its score, keyed by
    # f's weights and the student's settings; a changed f trains it again
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 8, 8), torch.arange(64) % 10
    data = {"x_train": x, "y_train": y, "x_test": x, "y_test": y}
    spec = {"classes": list(range(10)), "flip": False}
    args = argparse.Namespace(classifier_batch_size=16, distill_steps=3, judge_width=4,
                              classifier_lr=1e-3, augment=False, train_subset=0, fake_data=True,
                              seed=0)
    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    class G(torch.nn.Module):
        latent_dim = 5

        def forward(self, z, p, H):
            return torch.sigmoid(z.sum(1))[:, None, None, None].expand(-1, 1, 8, 8)
    judge_file = tmp_path / "judge.pt"
    common.save_checkpoint(judge_file, {"kind": "judge", "model": {}, "test_accuracy": 0.5})
    trained, fit = [], measure.fit
    monkeypatch.setattr(measure, "fit", lambda model, draw, steps, lr, name:
                        trained.append(name) or fit(model, draw, steps, lr, name))
    run = lambda: measure.distillation(spec, G(), f, data, args, torch.device("cpu"),  # noqa: E731
                                       judge_file, 0.5)
    first, second = run(), run()
    assert trained == ["student from generator", "student from training images",
                       "student from generator"]
    assert not first["real_student_kept"] and second["real_student_kept"]
    assert second["from_training_images"] == first["from_training_images"]
    assert torch.load(judge_file, weights_only=False)["test_accuracy"] == 0.5   # the judge kept
    with torch.no_grad():
        f[1].bias += 1.0                                         # another f: other targets
    third = run()
    assert trained[-1] == "student from training images" and not third["real_student_kept"]



def loop_own_share(feats, K, k=3):
    """For one class: the mean share of each sample's k nearest others made by its generator
    (sample j from generator j mod K), with plain Python sorting."""
    m = len(feats)
    total = 0.0
    for i in range(m):
        others = sorted((j for j in range(m) if j != i),
                        key=lambda j: float((feats[i] - feats[j]).norm()))
        total += sum(j % K == i % K for j in others[:k]) / k
    return total / m


def test_own_generator_share_counts_neighbours_by_maker_against_chance():
    # two generators, sample j of a class from generator j mod 2: first each generator draws one
    # tight cluster per class (every neighbour its own), then all samples from one cloud
    torch.manual_seed(3)
    labels = torch.arange(2).repeat_interleave(12)
    maker = torch.arange(12).repeat(2) % 2
    clustered = torch.randn(24, 5) * 0.01 + maker[:, None].float() * 5 + labels[:, None] * 20
    share, chance = measure.own_generator(clustered, labels, 2, 2)
    assert share == 1.0 and chance == pytest.approx(5 / 11)          # 5 of 11 others its own
    mixed = torch.randn(24, 5) + labels[:, None] * 20
    share, _ = measure.own_generator(mixed, labels, 2, 2)
    by_hand = [loop_own_share(mixed[labels == c], 2) for c in range(2)]
    assert 0 < by_hand[0] < 1
    assert share == pytest.approx(sum(by_hand) / 2)
    assert measure.own_generator(mixed, labels, 1, 2) == (None, None)   # one generator: no share
