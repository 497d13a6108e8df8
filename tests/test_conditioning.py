import torch

import common


def test_sampled_conditioning_is_a_distribution_with_its_argmax_and_hot_matrix():
    torch.manual_seed(0)
    n = 10
    p, y, H = common.sample_conditioning(500, n, "cpu")
    assert p.shape == (500, n) and y.shape == (500,) and H.shape == (500, 1, n, n)
    assert torch.allclose(p.sum(1), torch.ones(500))
    assert (p > 0).all()
    assert torch.equal(y, p.argmax(1))
    assert len(set(y.tolist())) == n                     # every class occurs in 500 draws


def test_hot_matrix_has_exactly_row_and_column_y_set():
    n = 10
    y = torch.tensor([0, 3, 9])
    H = common.hot_matrix(y, n)
    for k, label in enumerate(y.tolist()):
        expected = torch.zeros(n, n)
        expected[label, :] = 1
        expected[:, label] = 1
        assert torch.equal(H[k, 0], expected)
        assert H[k, 0].sum() == 2 * n - 1                # a row and a column share one cell


def test_chosen_labels_come_out_as_asked():
    torch.manual_seed(1)
    n = 10
    y = torch.arange(n).repeat(50)
    for intensity in (None, 0.01, 1.0, 8.0):
        p, y_out, H = common.conditioning_for_labels(y, n, intensity)
        assert torch.equal(y_out, y)
        assert torch.equal(p.argmax(1), y)
        assert torch.equal(H, common.hot_matrix(y, n))
        assert torch.allclose(p.sum(1), torch.ones(len(y)))


def test_intensity_controls_the_argmax_probability():
    torch.manual_seed(2)
    n = 10
    y = torch.zeros(200, dtype=torch.long)
    v = torch.randn(200, n)
    low, _, _ = common.conditioning_for_labels(y, n, 0.01, v)
    high, _, _ = common.conditioning_for_labels(y, n, 8.0, v)
    assert (high[:, 0] > low[:, 0]).all()
    assert high[:, 0].min() > 0.9                        # margin 8 in logits: nearly one-hot
    # the margin is exactly what was asked: log p_y - log max_{i != y} p_i
    others = low[:, 1:].max(1).values
    assert torch.allclose(low[:, 0].log() - others.log(), torch.full((200,), 0.01), atol=1e-5)


def test_natural_intensity_keeps_the_distribution_of_a_random_draw():
    torch.manual_seed(3)
    n = 10
    y = torch.full((4000,), 7)
    p, _, _ = common.conditioning_for_labels(y, n)
    p_free, _, _ = common.sample_conditioning(4000, n, "cpu")
    # the largest probability is distributed as in training, only moved to position y
    assert abs(p.max(1).values.mean() - p_free.max(1).values.mean()) < 0.01
