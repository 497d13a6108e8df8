"""--patch and --audit: Neural Cleanse's question asked with G (docs/audit.md).  G's picture is
pasted through a mask of class y onto clean training images of other classes; the mask's size is
penalised with a weight raised while f says y."""
import json

import pytest
import torch

import common
from conftest import TINY, load_script, load_tool, refused



def labelled_images(n=5, per=7):
    """Images whose every pixel holds their class / 10, so a drawn image tells its class."""
    y = torch.arange(n).repeat(per)[torch.randperm(n * per, generator=torch.Generator()
                                                   .manual_seed(0))]
    return (y.float() / 10).view(-1, 1, 1, 1).expand(-1, 1, 28, 28).clone(), y


def test_other_classes_never_draws_the_labels_own_class_and_draws_every_other():
    torch.manual_seed(0)
    x, y_train = labelled_images()
    bases = common.OtherClasses(x, y_train, 5)
    y = torch.arange(5).repeat(400)
    drawn = (bases.draw(y)[:, 0, 0, 0] * 10).round().long()
    assert (drawn != y).all()
    for c in range(5):
        others = drawn[y == c].bincount(minlength=5)
        assert others[c] == 0 and (others[torch.arange(5) != c] > 60).all()   # 400/4 each


def test_pasted_is_the_base_outside_the_mask_and_gs_picture_inside_it():
    torch.manual_seed(0)
    x, y_train = labelled_images(n=10)
    kw = dict(latent_dim=8, hidden=8, width=16, dropout=0.0)
    G = common.Generator(bases=common.OtherClasses(x, y_train, 10), patch_weight=1.0, **kw).eval()
    plain = common.Generator(**kw).eval()
    plain.load_state_dict({k: v for k, v in G.state_dict().items()
                           if k not in ("mask_logits", "patch_weight")})
    z = torch.randn(20, 8)
    p, y, H = common.conditioning_for_labels(torch.arange(10).repeat(2), 10)
    with torch.no_grad():
        G.mask_logits.fill_(-1.0)                                # m = sigmoid(-50): nothing pasted
        base = G(z, p, H)
        assert ((base[:, 0, 0, 0] * 10).round().long() != y).all()   # another class's image
        assert torch.allclose(base, base[:, :, :1, :1].expand_as(base), atol=1e-6)
        G.mask_logits.fill_(1.0)                                 # m = 1: G's picture alone
        assert torch.allclose(G(z, p, H), plain(z, p, H), atol=1e-6)
        G.mask_logits.fill_(0.0)                                 # m = 1/2: the mean of the two
        half = G(z, p, H)
        drawn = (half - plain(z, p, H) / 2) * 2                 # = the base drawn this time
        assert torch.allclose(drawn, drawn[:, :, :1, :1].expand_as(drawn), atol=1e-5)
        assert torch.allclose(G.mask, torch.full_like(G.mask, 0.5))


def test_patch_term_and_its_weights_schedule_by_hand():
    G = common.Generators([common.Generator(latent_dim=4, hidden=4, width=8, patch_weight=2.0,
                                            bases=common.OtherClasses(*labelled_images(n=10), 10))
                           for _ in range(2)])
    G[0].mask, G[1].mask = torch.full((3, 1, 2, 2), 0.25), torch.full((3, 1, 2, 2), 0.75)
    assert common.patch_term(G).item() == pytest.approx((2 * 0.25 + 2 * 0.75) / 2)
    common.adapt_patch_weight(G, torch.tensor(0.96))             # f said y: lambda up
    assert G[0].patch_weight.item() == pytest.approx(2 * 1.03)
    common.adapt_patch_weight(G, torch.tensor(0.5))              # it did not: down, faster
    assert G[1].patch_weight.item() == pytest.approx(2 * 1.03 * 1.03 ** -1.5)


def test_audit_is_a_preset_of_its_own_and_refuses_paper_and_data_free(capsys):
    mod = load_script("mnist_inversion")
    args = mod.parse_args(["--audit", "--quick"])
    assert (args.alpha, args.beta, args.gamma, args.patch) == (0.0, 1.0, 0.0, 1.0)
    assert args.stats == args.tv == args.robust_eps == 0 and args.num_generators == 1
    assert mod.parse_args(["--audit", "--patch", "3"]).patch == 3.0       # a flag given wins
    assert mod.parse_args(["--quick"]).patch == 0.0                       # off by default
    assert mod.parse_args(["--paper"]).patch == 0.0
    for other in ("--paper", "--data-free"):
        refused(capsys, lambda: common.run_main(mod.run, ["--audit", other], "x.py"), other[2:])
    refused(capsys, lambda: common.run_main(mod.run, ["--data-free", "--patch", "1"], "x.py"),
            "--patch")


def test_an_audit_run_pastes_trains_its_masks_and_rescores(tmp_path, capsys):
    mod = load_script("svhn_inversion")
    mod.main(TINY + ["--audit", "--plant-class", "2", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "G learns from f and the training images (--patch)" in out and " patch " in out
    assert "masks     class 2's mask" in out
    ckpt = torch.load(tmp_path / "generator.pt", weights_only=False)
    state = ckpt["model"]
    assert state["0.mask_logits"].shape == (10, 1, 32, 32)
    assert state["0.mask_logits"].abs().max() > 0                 # the masks were trained
    assert state["0.patch_weight"].item() != 1.0                  # lambda followed f
    masks = json.loads((tmp_path / "metrics.json").read_text())["cue"]["masks"]
    area = torch.sigmoid(common.MASK_SCALE * state["0.mask_logits"]).flatten(1).sum(1)
    assert masks["area"] == pytest.approx(area.tolist(), rel=1e-5)   # G's own masks, scored
    assert 0 <= masks["trigger_function"] <= 1 and "trigger   class 2's mask with its" in out
    samples = torch.load(tmp_path / "samples.pt")
    assert samples["images"].min() >= 0 and samples["images"].max() <= 1
    import measure
    first_total = json.loads((tmp_path / "metrics.json").read_text())["seconds"]["total"]
    for _ in range(2):                              # rescored twice: the first run's time kept
        common.run_main(measure.rescore, [str(tmp_path), "--device", "cpu"], "measure.py")
        again = json.loads((tmp_path / "metrics.json").read_text())
        assert again["config"]["patch"] == 1.0
        assert again["seconds"]["first_run_total"] == first_total
        assert again["seconds"]["generator"] > 0 and again["seconds"]["total"] != first_total
    # the figure tool: row 2 of the planted run (G's mask first) over a clean run's without masks,
    # the cue's box outlined, the planted run's mask measures
    clean = tmp_path / "clean"
    mod.main(TINY + ["--out-dir", str(clean)])
    common.run_main(measure.rescore, [str(clean), "--device", "cpu", "--cue-of", str(tmp_path)],
                    "measure.py")                   # the control: the planted run's trigger too
    control = json.loads((clean / "metrics.json").read_text())["cue"]
    assert 0 <= control["planted_trigger_function"] <= 1 and "masks" not in control
    assert "the planted run's (its mask, its median sample) on this f" in capsys.readouterr().out
    figure = load_tool("audit_figure")
    figure.main([str(tmp_path), str(clean), "--out", str(tmp_path / "row.png"), "--columns", "3"])
    out = capsys.readouterr().out
    assert out.count(f"class 2's mask {masks['area'][2]:.1f} pixels") == 1
    assert out.count("mask") == 1 and "planted f (" in out   # the clean run has none to print
    from PIL import Image
    page = Image.open(tmp_path / "row.png").convert("RGB")
    tile = 4 + 32 * figure.SCALE                           # make_grid: padding 4 before each
    assert page.size == (110 + 4 * tile + 4, 18 + 2 * (tile + 4))   # the widest row: mask + 3
    edge = 32 - 1 - 4                                      # the box's first row and column
    y0, x0 = 18 + 4 + edge * figure.SCALE - 1, 110 + 4 + edge * figure.SCALE   # the line above
    assert page.getpixel((x0, y0)) == (255, 0, 0) and page.getpixel((x0, y0 + 2)) != (255, 0, 0)
    with pytest.raises(common.UserError, match="nowhere/generator.pt not found"):
        figure.main([str(tmp_path), str(tmp_path / "nowhere"), "--out", "x.png"])
    with pytest.raises(common.UserError, match="trained without a planted cue"):
        figure.main([str(clean), str(tmp_path), "--out", "x.png"])
