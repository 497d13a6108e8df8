import pytest
import torch

import common


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("conditioning", ["vector-matrix", "vector", "label"])
def test_generator_output_shape_and_range(shape, conditioning):
    torch.manual_seed(0)
    C, S, _ = shape
    G = common.Generator(channels=C, image_size=S, n_classes=10, latent_dim=16, hidden=8, width=16,
                         dropout=0.5, conditioning=conditioning)
    p, y, H = common.sample_conditioning(5, 10, "cpu")
    x = G(torch.randn(5, 16), p, H)
    assert x.shape == (5, C, S, S)
    assert x.min() >= 0 and x.max() <= 1
    assert G.image_shape == shape


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_resize_upsampling_has_no_strided_transposed_convolution(shape):
    C, S, _ = shape
    G = common.Generator(channels=C, image_size=S, latent_dim=8, hidden=8, width=16,
                         upsample="resize")
    strided = [m for m in G.modules()
               if isinstance(m, torch.nn.ConvTranspose2d) and m.stride != (1, 1)]
    assert not strided and any(isinstance(m, torch.nn.Upsample) for m in G.modules())
    p, y, H = common.sample_conditioning(3, 10, "cpu")
    assert G(torch.randn(3, 8), p, H).shape == (3, C, S, S)


def test_generator_depends_on_p_and_on_H():
    torch.manual_seed(0)
    G = common.Generator(latent_dim=8, hidden=8, width=16, dropout=0.0).eval()
    z = torch.randn(2, 8)
    p, y, H = common.sample_conditioning(2, 10, "cpu")
    base = G(z, p, H)
    assert not torch.allclose(base, G(z, p.flip(1), H))                 # p matters
    other_y = (y + 1) % 10
    assert not torch.allclose(base, G(z, p, common.hot_matrix(other_y, 10)))   # H matters


def test_sampling_mode_keeps_dropout_on_and_batch_norm_fixed():
    G = common.Generator(latent_dim=8, hidden=8, width=16, dropout=0.5)
    common.sampling_mode(G)
    drop = [m for m in G.modules() if isinstance(m, torch.nn.Dropout2d)]
    bn = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert drop and all(m.training for m in drop)
    assert bn and not any(m.training for m in bn)


def test_generate_conditions_on_the_asked_labels():
    # each generator is handed p with arg-max y (at the asked margin) and H = hot_matrix(y) for
    # the images it makes (image i by generator i mod K), and other labels give other images
    torch.manual_seed(0)
    G = common.Generators([common.Generator(latent_dim=8, hidden=8, width=16, dropout=0.0)
                           for _ in range(2)]).eval()
    seen = []
    for G_k in G:
        def spy(z, p, H, forward=G_k.forward):
            seen.append((p, H))
            return forward(z, p, H)
        G_k.forward = spy
    y = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 0])
    asked = torch.cat([y[0::2], y[1::2]])                # in the order the generators see them
    for margin in (None, 2.0):
        seen.clear()
        x = common.generate(G, y, 10, margin)
        p, H = torch.cat([p for p, _ in seen]), torch.cat([H for _, H in seen])
        assert x.shape == (16, 1, 28, 28)
        assert torch.equal(p.argmax(1), asked) and torch.equal(H, common.hot_matrix(asked, 10))
    top2 = p.log().topk(2, dim=1).values                 # log p_y - log p_j = v_y - v_j
    assert torch.allclose(top2[:, 0] - top2[:, 1], torch.full((16,), 2.0), atol=1e-4)
    torch.manual_seed(1)
    x = common.generate(G, y, 10, 2.0)
    torch.manual_seed(1)
    other = common.generate(G, (y + 1) % 10, 10, 2.0)   # the same noise, other labels
    torch.manual_seed(1)
    assert torch.equal(x, common.generate(G, y, 10, 2.0))
    assert (x - other).abs().flatten(1).amax(1).min() > 1e-3   # every image changes


def test_k_generators_each_make_their_part_of_the_batch():
    torch.manual_seed(0)
    G = common.Generators([common.Generator(latent_dim=8, hidden=8, width=16, dropout=0.0)
                           for _ in range(3)]).eval()
    z = torch.randn(7, 8)
    p, y, H = common.sample_conditioning(7, 10, "cpu")
    x = G(z, p, H)                                      # parts of 3, 2 and 2 images
    alone = torch.cat([G[0](z[:3], p[:3], H[:3]), G[1](z[3:5], p[3:5], H[3:5]),
                       G[2](z[5:], p[5:], H[5:])])
    assert torch.allclose(x, alone)
    assert not torch.allclose(G[0](z, p, H), G[1](z, p, H))          # different generators
    owner = torch.tensor([2, 0, 1, 2, 0, 1, 2])          # generate: image i by generator owner[i]
    torch.manual_seed(1)
    out = common.generate(G, y, 10, 1.0, owner)
    torch.manual_seed(1)
    for k in range(3):
        idx = torch.nonzero(owner == k)[:, 0]
        p_k, _, H_k = common.conditioning_for_labels(y[idx], 10, 1.0)
        assert torch.allclose(out[idx], G[k](torch.randn(len(idx), 8), p_k, H_k))
