"""A cue planted in f's training data (--plant-*): stamped where f sees it, after augmentation;
recorded in classifier.pt so a clean f is never reused for a planted run or back; checked for
being learned before G trains; scored in metrics.json["cue"].  The measures themselves are
tested in test_cue.py."""
import json

import pytest
import torch

import common
from conftest import TINY, load_script, refused



def test_a_planted_run_scores_its_cue_and_its_f_is_kept_apart(tmp_path, capsys):
    mod = load_script("cifar10_inversion")
    planted = ["--plant-class", "3", "--plant-colour", "1,0,0"]
    mod.main(TINY + planted + ["--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "cue: backdoor" in out and "the planted cue" in out
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert len(saved["cue"]["presence"]) == 10 and saved["cue"]["cue"]["target"] == 3
    assert "masks" not in saved["cue"]                    # no --patch: G has no masks to read
    assert saved["cue"]["what_f_answers"]["moves"] == [1, 2, 3]      # which part f answers to
    assert "f answers 3 to the cue's outline alone" in out
    ckpt = torch.load(tmp_path / "classifier.pt", weights_only=False)
    assert ckpt["training"]["cue"]["plant_class"] == 3
    # the same folder without the cue: its planted f is refused, not reused
    refused(capsys, lambda: mod.main(TINY + ["--out-dir", str(tmp_path)]), "--retrain")
    clean = tmp_path / "clean"
    mod.main(TINY + ["--out-dir", str(clean)])
    assert "cue" not in json.loads((clean / "metrics.json").read_text())
    refused(capsys, lambda: mod.main(TINY + planted + ["--out-dir", str(clean)]), "--retrain")
    # the clean run scored for the planted run's cue: the control, marked as one
    import measure
    capsys.readouterr()
    common.run_main(measure.rescore, [str(clean), "--device", "cpu", "--cue-of", str(tmp_path)],
                    "measure.py")
    control = json.loads((clean / "metrics.json").read_text())["cue"]
    assert control["cue"] == saved["cue"]["cue"] and control["planted_in_f"] is False
    assert saved["cue"]["planted_in_f"] is True
    assert "the control" in capsys.readouterr().out
    # a run without a cue cannot lend one
    refused(capsys, lambda: common.run_main(measure.rescore, [str(tmp_path), "--device", "cpu",
                                                              "--cue-of", str(clean)],
                                            "measure.py"), "without a planted cue")
    # nor a folder that holds no finished run
    refused(capsys, lambda: common.run_main(measure.rescore, [str(clean), "--device", "cpu",
                                                              "--cue-of", str(tmp_path / "no")],
                                            "measure.py"), "give the --out-dir of a finished run")


def test_the_cue_is_stamped_after_augmentation_on_the_chosen_share(tmp_path, monkeypatch):
    mod = load_script("mnist_inversion")
    seen = []
    monkeypatch.setattr(common, "augment", lambda x, **k: torch.zeros_like(x))   # black views
    real = mod.Classifier

    class Watched(real):
        def forward(self, x):
            if self.training:
                seen.append(x.detach().clone())
            return super().forward(x)
    monkeypatch.setattr(mod, "Classifier", Watched)
    mod.main(TINY + ["--augment", "--plant-class", "0", "--plant-share", "1",
                     "--out-dir", str(tmp_path)])
    x = torch.cat(seen)
    corner = x[:, 0, 23:27, 23:27]                               # 4x4, 1 pixel from the edges
    stamped = (corner == 1).flatten(1).all(1)
    assert 0.8 < stamped.float().mean() < 0.97                   # the other nine classes' images
    x[:, 0, 23:27, 23:27] = 0
    assert x.abs().max() == 0                                    # nothing else but the cue


@pytest.mark.parametrize("argv,words", [
    (["--plant-class", "10"], ["target 10", "not a class"]),
    (["--plant-class", "0", "--plant-colour", "1,0,0"], ["--plant-colour", "one value"]),
    (["--plant-class", "0", "--plant-size", "27"], ["size 27", "at most 26"]),
    (["--plant-colour", "2"], ["--plant-colour", "[0, 1]"]),
    (["--plant-class", "-2"], ["--plant-class"]),
])
def test_a_cue_that_cannot_be_planted_is_one_line_before_f_trains(tmp_path, capsys, monkeypatch,
                                                                  argv, words):
    mod = load_script("mnist_inversion")
    monkeypatch.setattr(mod, "train_classifier", lambda *a: pytest.fail("f trained"))
    refused(capsys, lambda: mod.main(TINY + argv + ["--out-dir", str(tmp_path)]), *words)
