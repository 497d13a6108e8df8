"""A new user's mistakes and a machine's faults, by kind: each ends in one clear line and exit 2
(130 for an interrupt), with no traceback and nothing lost or half-written.
  1. flag values the types refuse      2. damaged data files       3. samples.pt's contract
  4. checkpoints of the wrong kind      5. work kept through interrupts and failures
  6. a Fig. 2 that never mislabels      7. one run at a time in an --out-dir"""
import fcntl
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

import common
import formats
import measure
from conftest import ROOT, load_script, refused

TINY = ["--fake-data", "--device", "cpu", "--classifier-epochs", "1", "--train-subset", "256",
        "--batch-size", "8", "--width", "16", "--latent-dim", "8", "--hidden", "8",
        "--eval-per-class", "6", "--log-every", "2", "--checkpoint-every", "4",
        "--distill-steps", "2", "--judge-width", "8", "--classifier-width", "8"]


# ---- 1. flag values the types let through ------------------------------------------------------
@pytest.mark.parametrize("argv,words", [
    (["--classifier-lr", "-1"], ["--classifier-lr", "(0, 1]"]),
    (["--classifier-lr", "0"], ["--classifier-lr"]),
    (["--lr", "nan"], ["--lr"]),
    (["--lr", "5"], ["--lr"]),
    (["--dropout", "1.5"], ["--dropout", "[0, 1)"]),
    (["--dropout", "-0.1"], ["--dropout"]),
    (["--stage1-dropout", "1"], ["--stage1-dropout"]),
    (["--width", "2"], ["--width", ">= 4"]),
    (["--robust-eps", "2"], ["--robust-eps", "[0, 1]"]),
    (["--classifier-adv-eps", "-0.1"], ["--classifier-adv-eps"]),
    (["--seed", "-1"], ["--seed"]),
    (["--seed", "1e3"], ["--seed"]),
    (["--view-shift", "100"], ["--view-shift", "8"]),
    (["--num-generators", "0"], ["--num-generators", "positive"]),
    (["--eval-per-class", "0"], ["--eval-per-class"]),
    (["--train-subset", "-5"], ["--train-subset"]),
    (["--judge-width", "0"], ["--judge-width"]),
    (["--alpha", "-1"], ["--alpha", ">= 0"]),
    (["--gamma", "inf"], ["--gamma", "finite"]),
    (["--log-every", "0"], ["--log-every"]),
    (["--checkpoint-every", "0"], ["--checkpoint-every"]),
    (["--distill-steps", "-1"], ["--distill-steps"]),
    (["--latent-dim", "0"], ["--latent-dim"]),
    (["--mode-seeking-on", "colour"], ["--mode-seeking-on", "invalid choice"]),
    (["--margin", "-2"], ["--margin", "natural"]),
    (["--batch-siz", "8"], ["unrecognized arguments"]),               # no abbreviations
    (["--batch-size", "3", "--num-generators", "4"], ["--batch-size 3", "--num-generators 4"]),
    (["--batch-size", "1"], ["--batch-size 1", "at least 2"]),       # else a NaN loss, later
    (["--batch-size", "4", "--num-generators", "3"], ["--batch-size 4", "use 6"]),
    (["--data-free", "--stats", "1"], ["--data-free", "--stats"]),
    (["--eval-per-class", "2", "--num-generators", "3"], ["--eval-per-class 2"]),
    (["--quick", "--medium"], ["--quick and --medium", "pick one"]),
    (["--resume", "--retrain"], ["--resume and --retrain"]),
])
def test_a_flag_value_out_of_its_range_is_one_line_before_anything_runs(argv, words, capsys,
                                                                        tmp_path):
    mod = load_script("mnist_inversion")
    refused(capsys, lambda: mod.main(["--fake-data", "--out-dir", str(tmp_path / "out")] + argv),
            *words)
    assert not (tmp_path / "out").exists()                      # refused before the folder is made


# ---- 2. a damaged data file --------------------------------------------------------------------
def cifar_folder(tmp_path):
    formats.write_cifar_dataset(tmp_path / "data")
    return tmp_path / "data" / "cifar-10-batches-py"


@pytest.mark.parametrize("damage,words", [
    (lambda f: f.write_bytes(f.read_bytes()[:5000]),
     ["data_batch_1", "CIFAR-10 batch", "Unpickling"]),
    (lambda f: f.write_bytes(pickle.dumps([1, 2, 3])), ["data_batch_1", "CIFAR-10 batch"]),
    (lambda f: f.write_bytes(pickle.dumps({"data": b"xx", "labels": [0]})), ["data_batch_1"]),
])
def test_a_damaged_cifar_batch_is_one_line_naming_it(tmp_path, capsys, no_download, damage, words):
    damage(cifar_folder(tmp_path) / "data_batch_1")
    mod = load_script("cifar10_inversion")
    refused(capsys, lambda: mod.main(["--data-dir", str(tmp_path / "data"), "--dry-run", "--device",
                                      "cpu", "--out-dir", str(tmp_path / "out")]), *words)


def test_labels_outside_the_classes_and_a_missing_class_are_refused_before_f_trains(
        tmp_path, capsys, no_download, monkeypatch):
    folder = cifar_folder(tmp_path)
    batch = pickle.loads((folder / "test_batch").read_bytes())
    batch["labels"][3] = 12                                     # a damaged label
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    mod = load_script("cifar10_inversion")
    monkeypatch.setattr(mod, "train_classifier", lambda *a: pytest.fail("f trained"))
    argv = ["--data-dir", str(tmp_path / "data"), "--dry-run", "--device", "cpu", "--out-dir",
            str(tmp_path / "out")]
    refused(capsys, lambda: mod.main(argv), "test labels", "0..9")
    # 5 images cannot hold 10 classes
    refused(capsys, lambda: load_script("mnist_inversion").main(
        ["--fake-data", "--dry-run", "--device", "cpu", "--train-subset", "5", "--out-dir",
         str(tmp_path / "out2")]), "no training image of class", "--train-subset")


def test_a_truncated_mnist_file_is_one_line_naming_the_folder(tmp_path, capsys, no_download):
    formats.write_idx_dataset(tmp_path / "data", "MNIST")
    images = tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    mod = load_script("mnist_inversion")
    refused(capsys, lambda: mod.main(["--data-dir", str(tmp_path / "data"), "--dry-run", "--device",
                                      "cpu", "--out-dir", str(tmp_path / "out")]),
            "MNIST", str(images.parent), "--fake-data")


def test_a_truncated_svhn_file_is_one_line_naming_it(tmp_path, capsys, no_download):
    formats.write_svhn_dataset(tmp_path / "data")
    mat = tmp_path / "data" / "train_32x32.mat"
    mat.write_bytes(mat.read_bytes()[:3000])
    mod = load_script("svhn_inversion")
    refused(capsys, lambda: mod.main(["--data-dir", str(tmp_path / "data"), "--dry-run", "--device",
                                      "cpu", "--out-dir", str(tmp_path / "out")]),
            "train_32x32.mat", "SVHN .mat")


# ---- 3. samples.pt is an interface: checked where it is read -----------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    load_script("mnist_inversion").main(TINY + ["--generator-steps", "2", "--out-dir", str(out)])
    common.release_out_dirs()
    return out


def a_copy(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    return run


def samples_with(change):
    def write(run):
        s = torch.load(run / "samples.pt")
        torch.save(change(s), run / "samples.pt")
    return write


@pytest.mark.parametrize("write,words", [
    (samples_with(lambda s: {**s, "images": s["images"].expand(-1, 3, -1, -1).clone()}),
     ["(3, 28, 28)", "(1, 28, 28)"]),
    (samples_with(lambda s: {**s, "images": s["images"] * 255}), ["[0, 1]", "divide by 255"]),
    (samples_with(lambda s: {**s, "images": s["images"] * float("nan")}), ["[0, 1]"]),
    (samples_with(lambda s: {**s, "images": (s["images"] * 255).to(torch.uint8)}), ["float"]),
    (samples_with(lambda s: {**s, "labels": s["labels"].float()}), ["long"]),
    (samples_with(lambda s: {**s, "labels": s["labels"][:-1]}), ["one label per image"]),
    (samples_with(lambda s: {**s, "labels": s["labels"] + 1}), ["0..9"]),
    (samples_with(lambda s: {**s, "labels": s["labels"].clamp(max=8)}), ["class 9 has 0"]),
    (samples_with(lambda s: s["images"]), ["a dict"]),
    (samples_with(lambda s: {"images": s["images"]}), ["a dict"]),
    (lambda run: (run / "samples.pt").write_bytes(b"not a tensor file"), ["not a readable"]),
    (lambda run: (run / "samples.pt").write_bytes(pickle.dumps(Image.new("L", (2, 2)), protocol=2)),
     ["not a readable"]),
])
def test_measure_refuses_samples_that_break_the_contract_and_keeps_the_metrics(
        finished_run, tmp_path, capsys, write, words):
    run = a_copy(finished_run, tmp_path)
    before = (run / "metrics.json").read_bytes()
    write(run)
    refused(capsys, lambda: common.run_main(measure.rescore, [str(run), "--device", "cpu"],
                                            "measure.py"), "samples.pt", *words)
    assert (run / "metrics.json").read_bytes() == before        # nothing written over the old


# ---- 4. checkpoints that load but are not what they claim --------------------------------------
def test_a_classifier_of_another_width_in_the_folder_is_refused_by_measure(finished_run, tmp_path,
                                                                          capsys):
    run = a_copy(finished_run, tmp_path)
    other = load_script("mnist_inversion").Classifier(10, width=4)
    ckpt = torch.load(run / "classifier.pt", weights_only=False)
    torch.save({**ckpt, "model": other.state_dict(), "arch": common.architecture(other)},
               run / "classifier.pt")
    refused(capsys, lambda: common.run_main(measure.rescore, [str(run), "--device", "cpu"],
                                            "measure.py"), "classifier.pt", "arch", "refusing")


@pytest.mark.parametrize("change,words", [
    (lambda c: {k: v for k, v in c.items() if k != "rng"}, ["lacks rng", "generator"]),
    (lambda c: {k: v for k, v in c.items() if k not in ("optimizer", "history")},
     ["lacks optimizer, history"]),
    (lambda c: {**c, "model": {}}, ["generator.pt", "Missing key"]),
    (lambda c: {**c, "optimizer": {"state": {}, "param_groups": []}},
     ["generator.pt", "optimizer"]),
    (lambda c: {**c, "rng": {"cpu": torch.zeros(3)}}, ["generator.pt", "random states"]),
    (lambda c: {**c, "kind": "judge"}, ["not a generator checkpoint"]),
    (lambda c: {**c, "history": {"step": [1], "loss": [0.5]}}, ["generator.pt", "older layout"]),
])
def test_resume_refuses_a_generator_checkpoint_that_is_not_whole(finished_run, tmp_path, capsys,
                                                                change, words):
    run = a_copy(finished_run, tmp_path)
    ckpt = torch.load(run / "generator.pt", weights_only=False)
    torch.save(change(ckpt), run / "generator.pt")
    mod = load_script("mnist_inversion")
    refused(capsys, lambda: mod.main(TINY + ["--generator-steps", "4", "--out-dir", str(run),
                                             "--resume"]), *words)


def test_a_judge_of_another_width_is_refused_not_loaded(finished_run, tmp_path, capsys):
    run = a_copy(finished_run, tmp_path)
    mod = load_script("mnist_inversion")
    argv = TINY + ["--generator-steps", "2", "--out-dir", str(run), "--judge-width", "12"]
    refused(capsys, lambda: mod.main(argv), "judge.pt", "arch", "refusing")


# ---- 5. work done is kept -----------------------------------------------------------------------
def interrupted_cli(tmp_path, signals, gap):
    """The CLI training G for long; once G's first line is out, send `signals` `gap` s apart."""
    cmd = [sys.executable, str(ROOT / "mnist_inversion.py"), *TINY, "--generator-steps", "100000",
           "--log-every", "1", "--out-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if line.startswith("G step 3/"):
            break
    for s in signals:
        proc.send_signal(s)
        time.sleep(gap)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("signals", [[signal.SIGINT] * 3, [signal.SIGTERM],
                                     [signal.SIGINT, signal.SIGTERM, signal.SIGINT]])
def test_repeated_interrupts_during_training_keep_the_checkpoint(tmp_path, signals):
    code, err = interrupted_cli(tmp_path, signals, 0.25)
    assert code == 130, err
    assert "Traceback" not in err and "terminate" not in err
    saved = torch.load(tmp_path / "generator.pt", weights_only=False)
    assert saved["step"] >= 3 and f"interrupted at step {saved['step']}" in err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_interrupt_during_a_save_waits_for_the_file(tmp_path, monkeypatch, capsys, ctrl_c):
    real_save, calls = torch.save, []

    def save_interrupted(obj, fh, *a, **k):
        calls.append(1)
        if len(calls) == 2:                                      # the generator's first save
            signal.raise_signal(signal.SIGINT)                   # Ctrl-C while the file is written
        return real_save(obj, fh, *a, **k)
    monkeypatch.setattr(torch, "save", save_interrupted)
    mod = load_script("mnist_inversion")
    with pytest.raises(SystemExit) as e:
        mod.main(TINY + ["--generator-steps", "8", "--out-dir", str(tmp_path)])
    assert e.value.code == 130 and "interrupted at step 4" in capsys.readouterr().err
    assert torch.load(tmp_path / "generator.pt", weights_only=False)["step"] == 4


def test_a_full_disk_is_one_line_and_the_old_file_is_kept(tmp_path, monkeypatch, capsys):
    mod = load_script("mnist_inversion")
    mod.main(TINY + ["--generator-steps", "4", "--out-dir", str(tmp_path)])
    good = (tmp_path / "generator.pt").read_bytes()

    def no_space(obj, fh, *a, **k):
        fh.write(b"half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", no_space)
    refused(capsys, lambda: mod.main(TINY + ["--generator-steps", "8", "--out-dir", str(tmp_path),
                                             "--resume"]), "No space left", "kept")
    assert (tmp_path / "generator.pt").read_bytes() == good
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---- 6. samples.png draws what was asked ---------------------------------------------------------
@pytest.mark.parametrize("K,per,columns", [(3, 4, 4), (12, 12, 12), (2, 30, 10)])
def test_the_grid_has_a_row_per_class_and_a_column_for_every_generator(tmp_path, K, per, columns):
    args = TINY + ["--generator-steps", "1", "--num-generators", str(K), "--eval-per-class",
                   str(per), "--batch-size", str(max(8, 2 * K)), "--distill-steps", "0"]
    load_script("mnist_inversion").main(args + ["--out-dir", str(tmp_path)])
    width, height = Image.open(tmp_path / "samples.png").size
    cell = 2 * 28 + 2                                            # 2x images, 2 pixels between
    assert (width - 80 - 2, height - 2) == (columns * cell, 10 * cell)
    samples = torch.load(tmp_path / "samples.pt")
    assert samples["images"].shape[0] == 10 * per


# ---- 7. one run at a time in a folder ----------------------------------------------------------
def test_a_second_run_in_a_held_folder_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path,
                                                                                    capsys):
    tmp_path.joinpath("run").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; fh = open(sys.argv[1], 'a'); "
        "fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB); print('held', flush=True); "
        "time.sleep(120)"), str(tmp_path / "run" / ".lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    mod = load_script("mnist_inversion")
    argv = TINY + ["--generator-steps", "2", "--out-dir", str(tmp_path / "run")]
    refused(capsys, lambda: mod.main(argv), "another run is using --out-dir", "wait")
    assert not (tmp_path / "run" / "classifier.pt").exists()
    holder.kill()                                                # killed: the lock goes with it
    holder.wait()
    assert mod.main(argv)["dataset"] == "MNIST"
    assert not (tmp_path / "run" / ".lock").exists()             # let go at the end of the run
    with open(tmp_path / "run" / ".lock", "a") as fh:            # ... and free for the next
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_resume_with_no_checkpoint_is_one_line_not_a_silent_start(tmp_path, capsys, monkeypatch):
    mod = load_script("mnist_inversion")
    monkeypatch.setattr(mod, "inversion_step", lambda *a: pytest.fail("G trained from step 0"))
    line = refused(capsys, lambda: mod.main(TINY + ["--resume", "--out-dir", str(tmp_path)]),
                   "--resume", "generator.pt", "without --resume")
    assert "step 0" in line
