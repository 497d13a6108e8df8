"""--validation: a sixth of the training images held out of every training and measured on in
place of the test set, which the run never reads; the same held-out images for every --seed."""
import torch

import common
from conftest import TINY, load_script, refused


def test_the_split_holds_out_a_sixth_drawn_the_same_way_every_time():
    x = torch.arange(600).reshape(600, 1, 1, 1)
    y = torch.arange(600) % 10
    (x_kept, y_kept), (x_held, y_held) = common.validation_split(x, y, n_test=1000)
    assert len(x_held) == 100 and len(x_kept) == 500                  # a sixth of 600
    kept, held = set(x_kept.flatten().tolist()), set(x_held.flatten().tolist())
    assert not kept & held and kept | held == set(range(600))
    assert torch.equal(y_held, x_held.flatten() % 10)                  # labels follow their images
    assert x_kept.flatten().diff().min() > 0                           # each in its old order
    again = common.validation_split(x, y, n_test=1000)[1][0]
    assert torch.equal(again, x_held)
    # at most as many as the test set has
    assert len(common.validation_split(x, y, n_test=40)[1][0]) == 40


def test_a_validation_run_never_reads_the_test_set_and_keeps_its_f_apart(tmp_path, capsys):
    mod = load_script("mnist_inversion")
    args = mod.parse_args(TINY + ["--validation", "--seed", "3"])
    data = mod.load_data(args, torch.device("cpu"))
    (train_x, _), (test_x, _) = common.fake_splits(mod.SHAPE, 10)
    held = common.validation_split(train_x, torch.zeros(len(train_x)), len(test_x))[1][0]
    # the measured images are the held-out training images (a dry run keeps 300), none trained on
    assert torch.equal(data["x_test"], held[:300].float() / 255)
    flat = data["x_train"].flatten(1)
    assert not any((flat == h.flatten()).all(1).any() for h in data["x_test"][:50])
    metrics = mod.main(TINY + ["--validation", "--out-dir", str(tmp_path)])
    assert metrics["split"] == "validation"
    assert "the validation split, the test set unread" in capsys.readouterr().out
    # an f trained on all the training images is another f
    refused(capsys, lambda: mod.main(TINY + ["--out-dir", str(tmp_path)]), "validation",
            "--retrain")
