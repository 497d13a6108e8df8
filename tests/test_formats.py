"""Each script reads its dataset's real on-disk format (tiny files written in that format by
tests/formats.py) through torchvision, and never downloads when the files are there; when they
are missing and cannot be downloaded, one line says which files to put where."""
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

import common
import formats
from conftest import load_script


def load(script, root):
    mod = load_script(script)
    return mod.load_data(mod.parse_args(["--data-dir", str(root), "--device", "cpu"]),
                         torch.device("cpu"))


def check(data, expected):
    x_tr, y_tr, x_te, y_te = expected
    assert np.array_equal(
        (data["x_train"] * 255).round().to(torch.uint8).numpy().reshape(x_tr.shape), x_tr)
    assert data["y_train"].tolist() == y_tr.tolist()
    assert np.array_equal(
        (data["x_test"] * 255).round().to(torch.uint8).numpy().reshape(x_te.shape), x_te)
    assert data["y_test"].tolist() == y_te.tolist()
    assert (data["x_train"].dtype == torch.float32
            and 0 <= data["x_train"].min() and data["x_train"].max() <= 1)


@pytest.mark.parametrize("script,folder", [("mnist_inversion", "MNIST"),
                                           ("fashion_inversion", "FashionMNIST")])
def test_idx_files(tmp_path, no_download, script, folder):
    expected = formats.write_idx_dataset(tmp_path, folder)
    data = load(script, tmp_path)
    assert data["x_train"].shape == (60, 1, 28, 28)
    check(data, (expected[0][:, None], expected[1], expected[2][:, None], expected[3]))


def test_cifar10_pickles_that_torchvision_accepts(tmp_path, no_download, monkeypatch):
    # torchvision reads only the published files (md5 sums); these tiny ones stand in for them
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    expected = formats.write_cifar_dataset(tmp_path)
    check(load("cifar10_inversion", tmp_path), expected)


def test_cifar10_pickles_that_torchvision_refuses_are_read_by_hand(tmp_path, no_download, capsys):
    expected = formats.write_cifar_dataset(tmp_path)              # not the published bytes: refused
    data = load("cifar10_inversion", tmp_path)
    assert data["x_train"].shape == (60, 3, 32, 32) and data["x_test"].shape == (30, 3, 32, 32)
    check(data, expected)


def test_svhn_mat_files_map_label_10_to_digit_0(tmp_path, no_download, monkeypatch):
    # as above
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    x_tr, y_tr, x_te, y_te = formats.write_svhn_dataset(tmp_path)
    data = load("svhn_inversion", tmp_path)
    assert data["x_train"].shape == (60, 3, 32, 32)
    assert 0 in data["y_train"].tolist() and 10 not in data["y_train"].tolist()
    check(data, (x_tr, y_tr, x_te, y_te))


def test_svhn_mat_files_that_torchvision_refuses_are_read_by_hand(tmp_path, no_download):
    # not the published bytes: refused
    x_tr, y_tr, x_te, y_te = formats.write_svhn_dataset(tmp_path)
    data = load("svhn_inversion", tmp_path)
    assert 0 in data["y_train"].tolist() and 10 not in data["y_train"].tolist()
    check(data, (x_tr, y_tr, x_te, y_te))


def test_an_unreadable_svhn_mat_file_is_a_clear_error(tmp_path, no_download):
    formats.write_svhn_dataset(tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(common.UserError, match="test_32x32.mat is not a readable SVHN .mat file"):
        load("svhn_inversion", tmp_path)


def test_a_truncated_idx_file_is_a_clear_error(tmp_path, no_download):
    formats.write_idx_dataset(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(common.UserError, match="could not read it from .*MNIST/raw") as err:
        load("mnist_inversion", tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("script,cls,sub,files", [
    ("mnist_inversion", "MNIST", "MNIST/raw",
     ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    ("fashion_inversion", "FashionMNIST", "FashionMNIST/raw", ["train-labels-idx1-ubyte"]),
    ("cifar10_inversion", "CIFAR10", "cifar-10-batches-py",
     ["data_batch_1", "data_batch_5", "test_batch"]),
    ("svhn_inversion", "SVHN", "", ["train_32x32.mat", "test_32x32.mat"])])
def test_missing_data_without_network_names_files_folder_and_fake_data(tmp_path, monkeypatch,
                                                                       script, cls, sub, files):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torchvision.datasets, cls, offline)
    with pytest.raises(common.UserError) as err:
        load(script, tmp_path)
    message = str(err.value)
    assert str(tmp_path / sub) in message and "--fake-data" in message and "URLError" in message
    assert all(f in message for f in files)
    assert "\n" not in message


def test_fake_data_is_learnable_and_dataset_shaped():
    (x_tr, y_tr), (x_te, y_te) = common.fake_splits((3, 32, 32))
    assert x_tr.shape == (3000, 3, 32, 32) and x_tr.dtype == torch.uint8
    # nearest class mean already separates the classes: each class has its own pattern
    means = torch.stack([x_tr[y_tr == c].float().mean(0) for c in range(10)])
    d = torch.cdist(x_te.float().flatten(1), means.flatten(1))
    assert (d.argmin(1) == y_te).float().mean() > 0.9
    # deterministic
    assert np.array_equal(common.fake_splits((3, 32, 32))[0][0].numpy(), x_tr.numpy())
