"""A student's own classifier f: one with its layers nested in blocks, one trained elsewhere (a
state dict), one with another number of classes.  Each runs, or is refused in one line before
anything trains (common.check_classifier)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import common
from conftest import load_script, refused

TINY = ["--fake-data", "--dry-run", "--device", "cpu", "--classifier-width", "8", "--width", "16",
        "--latent-dim", "8", "--hidden", "8", "--eval-per-class", "6", "--distill-steps", "0",
        "--judge-width", "8"]


class Block(nn.Module):
    """A block with a forward of its own: its layers are not f.features' direct children."""

    def __init__(self, c_in, c_out, bn=False):
        super().__init__()
        norm = [nn.BatchNorm2d(c_out)] if bn else []
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), *norm, nn.LeakyReLU(0.1))

    def forward(self, x):
        return F.max_pool2d(self.body(x), 2)


class Nested(nn.Module):
    """28x28 grey images, layers two levels deep; functional=True: F.relu instead of modules."""

    def __init__(self, n_classes=10, width=8, bn=False, functional=False):
        super().__init__()
        self.functional = functional
        if functional:
            self.features = nn.Sequential(nn.Conv2d(1, width, 3, stride=4), nn.Flatten())
        else:
            self.features = nn.Sequential(nn.Sequential(Block(1, width, bn), Block(width, width)),
                                          nn.Flatten(), nn.Linear(width * 49, 32), nn.ReLU())
        self.head = nn.Linear(width * 49 if functional else 32, n_classes)

    def forward(self, x):
        return self.head(self.features(x))


def no_training(monkeypatch, mod):
    monkeypatch.setattr(mod, "train_classifier", lambda *a: pytest.fail("f trained"))


def test_activation_layers_nested_in_blocks_are_found_for_the_statistics_prior():
    torch.manual_seed(0)
    f = Nested(bn=True).eval()
    x, y = torch.rand(10, 1, 28, 28).repeat(2, 1, 1, 1), torch.arange(20) % 10   # each class:
    phi, acts, bn = common.activations(f.features, x)
    assert torch.equal(phi, f.features(x))
    assert len(acts) == 3 and len(bn) == 1 and bn[0][1] is f.features[0][0].body[1]
    assert torch.equal(acts[-1], phi)                            # the last ReLU's output is phi
    stats = common.feature_statistics(f, x, y, 10)
    term = common.stats_term(acts, stats, y)
    assert torch.is_tensor(term) and term.item() == pytest.approx(0, abs=1e-4)   # one image twice
    assert common.bn_term(bn).item() > 0


def test_a_nested_f_runs_end_to_end_with_every_prior(tmp_path, monkeypatch):
    mod = load_script("mnist_inversion")
    monkeypatch.setattr(mod, "Classifier", lambda n, width: Nested(n, width, bn=True))
    mod.main(TINY + ["--bn-stats", "1", "--stats", "1", "--out-dir", str(tmp_path)])
    assert torch.load(tmp_path / "samples.pt")["images"].shape == (60, 1, 28, 28)


@pytest.mark.parametrize("make,argv,words", [
    (lambda n, w: Nested(n, w, functional=True), ["--stats", "1"], ["nn.ReLU", "--data-free"]),
    (lambda n, w: Nested(n, w), ["--bn-stats", "1"], ["--bn-stats needs batch norm"]),
    (lambda n, w: Nested(n + 1, w), [], ["11", "CLASSES has 10"]),
    (lambda n, w: nn.Sequential(nn.Flatten(), nn.Linear(784, n)), [], ["f.features", "f.head"]),
    (lambda n, w: Nested(n, w), ["--fake-data"], []),            # the control: no complaint
])
def test_what_f_must_provide_is_checked_before_it_trains(tmp_path, monkeypatch, capsys, make,
                                                          argv, words):
    mod = load_script("mnist_inversion")
    monkeypatch.setattr(mod, "Classifier", make)
    if not words:
        mod.main(TINY + argv + ["--out-dir", str(tmp_path)])
        return
    no_training(monkeypatch, mod)
    refused(capsys, lambda: mod.main(TINY + argv + ["--out-dir", str(tmp_path)]), *words)
    assert not (tmp_path / "classifier.pt").exists()


def test_a_functional_f_runs_data_free(tmp_path, monkeypatch):
    mod = load_script("mnist_inversion")
    monkeypatch.setattr(mod, "Classifier", lambda n, w: Nested(n, w, functional=True))
    mod.main(TINY + ["--data-free", "--out-dir", str(tmp_path)])
    assert (tmp_path / "samples.pt").is_file()


def test_weights_trained_elsewhere_are_loaded_not_trained(tmp_path, monkeypatch, capsys):
    mod = load_script("cifar10_inversion")
    torch.manual_seed(3)
    elsewhere = mod.Classifier(10, 8)
    torch.save(elsewhere.state_dict(), tmp_path / "mine.pt")
    no_training(monkeypatch, mod)
    run = TINY + ["--classifier-weights", str(tmp_path / "mine.pt"), "--out-dir", str(tmp_path)]
    mod.main(run)
    assert "f: loaded" in capsys.readouterr().out
    saved = torch.load(tmp_path / "classifier.pt", weights_only=False)
    assert all(torch.equal(v, elsewhere.state_dict()[k]) for k, v in saved["model"].items())
    mod.main(run)                                                # the same file: reused
    assert "f: reusing" in capsys.readouterr().out
    torch.save(mod.Classifier(10, 8).state_dict(), tmp_path / "other.pt")   # another file
    refused(capsys, lambda: mod.main(TINY + ["--classifier-weights", str(tmp_path / "other.pt"),
                                             "--out-dir", str(tmp_path)]), "--retrain")


@pytest.mark.parametrize("content,words", [
    (b"not a torch file", ["mine.pt", "state dict of f"]),
    ("another", ["mine.pt", "does not hold this run's Classifier"]),
    ("missing", ["mine.pt", "No such file"]),
])
def test_weights_that_are_not_f_s_are_one_line(tmp_path, monkeypatch, capsys, content, words):
    mod = load_script("cifar10_inversion")
    path = tmp_path / "mine.pt"
    if content == "another":
        torch.save(mod.Classifier(10, 16).state_dict(), path)   # a wider f's weights
    elif isinstance(content, bytes):
        path.write_bytes(content)
    no_training(monkeypatch, mod)
    refused(capsys, lambda: mod.main(TINY + ["--classifier-weights", str(path),
                                             "--out-dir", str(tmp_path / "out")]), *words)


@pytest.mark.parametrize("n,S", [(17, 28), (17, 32), (32, 28), (2, 32)])
def test_more_classes_than_half_the_image_size_are_averaged_down(n, S):
    G = common.Generator(channels=3, image_size=S, n_classes=n, latent_dim=8, hidden=8, width=16)
    p, y, H = common.sample_conditioning(6, n, "cpu")
    assert G(torch.randn(6, 8), p, H).shape == (6, 3, S, S)


def test_17_classes_run_end_to_end_and_100_are_one_line(tmp_path, monkeypatch, capsys):
    mod = load_script("mnist_inversion")
    monkeypatch.setattr(mod, "CLASSES", [f"class {i}" for i in range(17)])
    mod.main(TINY + ["--out-dir", str(tmp_path / "17")])
    samples = torch.load(tmp_path / "17" / "samples.pt")
    assert samples["labels"].unique().tolist() == list(range(17))
    monkeypatch.setattr(mod, "CLASSES", [f"class {i}" for i in range(100)])
    no_training(monkeypatch, mod)
    whole = [a for a in TINY if a != "--dry-run"]               # every class in each split
    refused(capsys, lambda: mod.main(whole + ["--out-dir", str(tmp_path / "100")]),
            "100 classes", "2 to 32")
