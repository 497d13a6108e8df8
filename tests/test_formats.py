"""The real loading code reads each dataset's on-disk format, and never downloads when the
files are there; when they are missing and cannot be downloaded, the message says what to do."""
import types
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

import common
import formats


@pytest.fixture
def no_download(monkeypatch):
    def refuse(name, root):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(common, "download", refuse)


def load(name, shape, root):
    args = types.SimpleNamespace(fake_data=False, data_dir=str(root), train_subset=0)
    return common.load_data(name, shape, args, torch.device("cpu"))


def check(data, expected):
    x_tr, y_tr, x_te, y_te = expected
    assert np.array_equal((data["x_train"] * 255).round().to(torch.uint8).numpy().reshape(x_tr.shape), x_tr)
    assert data["y_train"].tolist() == y_tr.tolist()
    assert np.array_equal((data["x_test"] * 255).round().to(torch.uint8).numpy().reshape(x_te.shape), x_te)
    assert data["y_test"].tolist() == y_te.tolist()
    assert data["x_train"].dtype == torch.float32 and 0 <= data["x_train"].min() and data["x_train"].max() <= 1


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_files(tmp_path, no_download, name, compress):
    expected = formats.write_idx_dataset(tmp_path, name, compress=compress)
    data = load(name, (1, 28, 28), tmp_path)
    assert data["x_train"].shape == (60, 1, 28, 28)
    check(data, (expected[0][:, None], *expected[1:2], expected[2][:, None], expected[3]))


def test_cifar10_pickled_batches(tmp_path, no_download):
    expected = formats.write_cifar_dataset(tmp_path)
    data = load("CIFAR10", (3, 32, 32), tmp_path)
    assert data["x_train"].shape == (60, 3, 32, 32) and data["x_test"].shape == (30, 3, 32, 32)
    check(data, expected)


def test_svhn_mat_files_map_label_10_to_digit_0(tmp_path, no_download):
    x_tr, y_tr, x_te, y_te = formats.write_svhn_dataset(tmp_path)
    data = load("SVHN", (3, 32, 32), tmp_path)
    assert data["x_train"].shape == (60, 3, 32, 32)
    assert 0 in data["y_train"].tolist() and 10 not in data["y_train"].tolist()
    check(data, (x_tr, y_tr, x_te, y_te))


def test_a_truncated_idx_file_is_a_clear_error(tmp_path, no_download):
    formats.write_idx_dataset(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(common.UserError, match="truncated"):
        load("MNIST", (1, 28, 28), tmp_path)


@pytest.mark.parametrize("name,cls", [("MNIST", "MNIST"), ("FashionMNIST", "FashionMNIST"),
                                      ("CIFAR10", "CIFAR10"), ("SVHN", "SVHN")])
def test_missing_data_without_network_names_files_folder_and_fake_data(tmp_path, monkeypatch, name, cls):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torchvision.datasets, cls, offline)
    with pytest.raises(common.UserError) as err:
        load(name, (1, 28, 28) if "MNIST" in name else (3, 32, 32), tmp_path)
    message = str(err.value)
    sub, files = common.DATASETS[name]
    assert str(tmp_path / sub) in message and "--fake-data" in message
    assert all(f in message for f in files)
    assert "\n" not in message


def test_fake_data_is_learnable_and_dataset_shaped():
    x_tr, y_tr, x_te, y_te = common.fake_dataset((3, 32, 32))
    assert x_tr.shape == (3000, 3, 32, 32) and x_tr.dtype == torch.uint8
    # nearest class mean already separates the classes: each class has its own pattern
    means = torch.stack([x_tr[y_tr == c].float().mean(0) for c in range(10)])
    d = torch.cdist(x_te.float().flatten(1), means.flatten(1))
    assert (d.argmin(1) == y_te).float().mean() > 0.9
    assert np.array_equal(common.fake_dataset((3, 32, 32))[0].numpy(), x_tr.numpy())   # deterministic
