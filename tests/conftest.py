"""Shared test helpers: the repository root on sys.path, the scripts by name, CPU threads."""
import importlib
import signal
import sys
from pathlib import Path

import pytest
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)

SCRIPTS = ["mnist_inversion", "fashion_inversion", "svhn_inversion", "cifar10_inversion"]
# a dry run on fake data with small networks, for tests where the widths do not matter (a dry run
# keeps the full widths, and the colour sets' f takes most of its half minute on a slow CPU)
TINY = ["--fake-data", "--dry-run", "--device", "cpu", "--classifier-width", "8", "--width", "16",
        "--latent-dim", "8", "--hidden", "8", "--eval-per-class", "6", "--distill-steps", "0",
        "--judge-width", "8"]


def load_script(name):
    return importlib.import_module(name)


def load_tool(name):
    """tools/NAME.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture(params=SCRIPTS)
def script(request):
    return load_script(request.param)


@pytest.fixture
def no_download(monkeypatch):
    """Any download torchvision would attempt fails the test."""
    def refuse(*a, **k):
        raise AssertionError("a download was attempted")
    for module, name in [(torchvision.datasets.mnist, "download_and_extract_archive"),
                         (torchvision.datasets.cifar, "download_and_extract_archive"),
                         (torchvision.datasets.svhn, "download_url")]:
        monkeypatch.setattr(module, name, refuse)


@pytest.fixture
def ctrl_c():
    """SIGINT raises KeyboardInterrupt here, as at a terminal, even where pytest started with it
    ignored (a shell without job control starts a background command `cmd &` that way)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def refused(capsys, call, *words, code=2):
    """call() must exit with `code` and say one line holding every word; returns that line."""
    with pytest.raises(SystemExit) as e:
        call()
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line]
    assert e.value.code == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]
