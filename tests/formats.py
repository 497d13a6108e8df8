"""Tiny dataset files written in each dataset's real on-disk format (for the tests)."""
import pickle
import struct
from pathlib import Path

import numpy as np


def labels_for(N):
    return (np.arange(N) % 10).astype(np.uint8)


def images_for(N, shape, seed):
    """Images whose mean brightness encodes the label, so a label mix-up is visible."""
    rng = np.random.default_rng(seed)
    y = labels_for(N)
    x = (rng.integers(0, 50, size=(N, *shape), dtype=np.uint8)
         + (y * 20).reshape(-1, *[1] * len(shape)).astype(np.uint8))
    return x, y


def write_idx(path, array):
    header = (struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
              + b"".join(struct.pack(">I", d) for d in array.shape))
    Path(path).write_bytes(header + array.astype(np.uint8).tobytes())


def write_idx_dataset(root, folder, n_train=60, n_test=30):
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True)
    x_tr, y_tr = images_for(n_train, (28, 28), 0)
    x_te, y_te = images_for(n_test, (28, 28), 1)
    for name, arr in [("train-images-idx3-ubyte", x_tr), ("train-labels-idx1-ubyte", y_tr),
                      ("t10k-images-idx3-ubyte", x_te), ("t10k-labels-idx1-ubyte", y_te)]:
        write_idx(raw / name, arr)
    return x_tr, y_tr, x_te, y_te


def write_cifar_dataset(root, per_batch=12, n_test=30):
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = []
    for i in range(1, 6):
        x, y = images_for(per_batch, (3, 32, 32), i)
        batches.append((x, y))
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump({"batch_label": f"training batch {i} of 5",
                         "data": x.reshape(per_batch, -1), "labels": y.tolist(),
                         "filenames": [f"{i}_{k}.png" for k in range(per_batch)]}, fh)
    x_te, y_te = images_for(n_test, (3, 32, 32), 9)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({"batch_label": "testing batch 1 of 1", "data": x_te.reshape(n_test, -1),
                     "labels": y_te.tolist(), "filenames": []}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                     "frog", "horse", "ship", "truck"],
                     "num_cases_per_batch": per_batch, "num_vis": 3072}, fh)
    x_tr = np.concatenate([b[0] for b in batches])
    y_tr = np.concatenate([b[1] for b in batches])
    return x_tr, y_tr, x_te, y_te


def write_svhn_dataset(root, n_train=60, n_test=30):
    from scipy.io import savemat
    Path(root).mkdir(parents=True, exist_ok=True)
    out = []
    for name, N, seed in [("train_32x32.mat", n_train, 0), ("test_32x32.mat", n_test, 1)]:
        x, y = images_for(N, (3, 32, 32), seed)
        stored = np.where(y == 0, 10, y).astype(np.uint8).reshape(N, 1)     # SVHN stores 0 as 10
        savemat(str(Path(root) / name), {"X": x.transpose(2, 3, 1, 0), "y": stored})
        out += [x, y]
    return out
