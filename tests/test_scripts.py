"""Each script end to end: --fake-data --dry-run writes every output, samples.pt keeps its
contract, a second run reuses the cached classifier, and the real on-disk formats run too."""
import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch
import torchvision

import common
import formats
from conftest import ROOT, SCRIPTS, TINY, load_script

OUTPUTS = ["classifier.pt", "judge.pt", "judge2.pt", "generator.pt", "samples.pt", "samples.png",
           "nearest.png", "intensity.png", "losses.png", "metrics.json"]


def finite(obj):
    if isinstance(obj, dict):
        return all(finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(finite(v) for v in obj)
    return not isinstance(obj, float) or math.isfinite(obj)


@pytest.mark.parametrize("name", SCRIPTS)
def test_dry_run_writes_every_output_and_samples_follow_the_contract(tmp_path, name):
    mod = load_script(name)
    out = tmp_path / "run"
    metrics = mod.main(["--fake-data", "--dry-run", "--device", "cpu", "--out-dir", str(out),
                        "--eval-per-class", "5"])
    for f in OUTPUTS:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]      # no temporary files
    samples = torch.load(out / "samples.pt")
    C, H, W = mod.SHAPE
    images, labels = samples["images"], samples["labels"]
    assert images.dtype == torch.float32 and images.shape == (50, C, H, W)
    assert images.min() >= 0 and images.max() <= 1
    assert labels.dtype == torch.long and labels.tolist() == sorted(list(range(10)) * 5)
    saved = json.loads((out / "metrics.json").read_text())
    inv = saved["inversion"]
    for key in ["target_accuracy", "per_class_target_accuracy", "mean_confidence", "judge_accuracy",
                "diversity_ratio", "feature_cosine", "feature_cosine_real", "frechet_distance",
                "frechet_distance_real", "frechet_reference",
                "nn_distance"]:
        assert key in inv, key
    assert len(inv["per_class_target_accuracy"]) == 10
    assert (0 <= saved["classifier"]["test_accuracy"] <= 1
            and 0 <= saved["judge"]["test_accuracy"] <= 1)
    assert set(saved["seconds"]) >= {"data", "classifier", "judge", "generator", "total"}
    assert [line["step"] for line in saved["history"]] == [2, 4] and finite(saved)
    assert list(saved["history"][0])[:6] == ["step", "alpha*L_KL", "beta*L_CE", "gamma*L_cos",
                                             "L_inv", "robust"]
    assert set(saved["distillation"]) == {"from_generator", "from_training_images", "steps",
                                          "batch_size", "student", "real_student_kept",
                                          "teacher_f", "images_seen"}
    distilled = saved["distillation"]                       # f beside its students, their budget
    assert distilled["teacher_f"] == saved["classifier"]["test_accuracy"]
    assert distilled["images_seen"] == distilled["steps"] * distilled["batch_size"] > 0
    assert saved["config"]["fake_data"] is True and saved["device"] == "cpu"
    ckpt = torch.load(out / "generator.pt", weights_only=False)
    assert ckpt["step"] == 4 and ckpt["dataset"] == mod.DATASET and "optimizer" in ckpt
    assert metrics["inversion"] == inv
    by_margin = saved["inversion_by_margin"]
    assert list(by_margin) == ["natural", "0.5", "1", "2", "4"]
    assert all(set(r) == {"target_accuracy", "judge_accuracy", "diversity_ratio",
                          "recall", "precision", "coverage", "density"}
               for r in by_margin.values())
    assert saved["config"]["margin"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("flag,margin", [("natural", None), ("3", 3.0)])
def test_margin_flag_sets_the_conditioning_of_the_samples(tmp_path, monkeypatch, flag, margin):
    mod = load_script("mnist_inversion")
    seen = []
    original = common.conditioning_for_labels

    def spy(y, n, intensity=None, v=None):
        seen.append("figure" if torch.is_tensor(intensity) else intensity)
        return original(y, n, intensity, v)
    monkeypatch.setattr(common, "conditioning_for_labels", spy)
    mod.main(["--fake-data", "--dry-run", "--device", "cpu", "--out-dir", str(tmp_path),
              "--eval-per-class", "3", "--margin", flag])
    first, last = seen.index("figure"), len(seen) - 1 - seen[::-1].index("figure")
    assert seen[:first] and set(seen[:first]) == {margin}       # evals during training, samples.pt
    assert set(seen[first:last + 1]) == {"figure"}              # intensity.png: its own margins
    assert seen[last + 1:] == [None, 0.5, 1.0, 2.0, 4.0]        # metrics.json inversion_by_margin


@pytest.mark.slow
def test_second_run_reuses_the_cached_classifier_unless_retrain(tmp_path, capsys):
    mod = load_script("mnist_inversion")
    argv = ["--fake-data", "--dry-run", "--device", "cpu", "--out-dir", str(tmp_path),
            "--eval-per-class", "3"]
    mod.main(argv)
    stamp = (tmp_path / "classifier.pt").stat().st_mtime_ns
    first = torch.load(tmp_path / "generator.pt", weights_only=False)["model"]
    capsys.readouterr()
    mod.main(argv)
    assert "f: reusing" in capsys.readouterr().out
    assert (tmp_path / "classifier.pt").stat().st_mtime_ns == stamp
    again = torch.load(tmp_path / "generator.pt", weights_only=False)["model"]
    assert all(torch.equal(first[k], again[k]) for k in first)        # G does not depend on caching
    mod.main(argv + ["--retrain"])
    assert (tmp_path / "classifier.pt").stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_several_generators_are_the_columns_of_samples_png(tmp_path):
    mod = load_script("fashion_inversion")
    mod.main(["--fake-data", "--dry-run", "--device", "cpu", "--out-dir", str(tmp_path),
              "--eval-per-class", "4", "--num-generators", "2"])
    model = torch.load(tmp_path / "generator.pt", weights_only=False)["model"]   # both in one file
    a = {k[2:]: v for k, v in model.items() if k.startswith("0.")}
    b = {k[2:]: v for k, v in model.items() if k.startswith("1.")}
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)   # two generators
    samples = torch.load(tmp_path / "samples.pt")
    first, second = samples["images"][0::2], samples["images"][1::2]   # columns 0, 2 / 1, 3
    assert not torch.allclose(first, second)


@pytest.mark.slow
@pytest.mark.parametrize("name,writer", [
    ("mnist_inversion", lambda root: formats.write_idx_dataset(root, "MNIST")),
    ("fashion_inversion", lambda root: formats.write_idx_dataset(root, "FashionMNIST")),
    ("svhn_inversion", formats.write_svhn_dataset),
    ("cifar10_inversion", formats.write_cifar_dataset)])
def test_scripts_run_on_files_in_the_real_format_without_downloading(tmp_path, monkeypatch,
                                                                     no_download, name, writer):
    writer(tmp_path / "data")
    # tiny files
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    mod = load_script(name)
    metrics = mod.main(["--data-dir", str(tmp_path / "data"), "--dry-run", "--device", "cpu",
                        "--out-dir", str(tmp_path / "out"), "--eval-per-class", "2"])
    assert metrics["fake_data"] is False and (tmp_path / "out" / "samples.png").exists()


@pytest.mark.slow
def test_importing_a_script_does_nothing(tmp_path):
    code = ("import os, sys; sys.path.insert(0, %r); os.chdir(%r); "
            "import mnist_inversion, fashion_inversion, svhn_inversion, "
            "cifar10_inversion, measure; "
            "print(sorted(os.listdir('.')))") % (str(ROOT), str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]" and result.stderr == ""


@pytest.mark.slow
def test_command_line_run_as_a_user_would(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "mnist_inversion.py"), "--fake-data",
                             "--dry-run", "--device", "cpu", "--out-dir", str(tmp_path),
                             "--eval-per-class", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "device: cpu" in result.stdout and "L_inv" in result.stdout and "ETA" in result.stdout


def test_lengths_set_only_the_flags_not_given_on_the_command_line():
    fashion = load_script("fashion_inversion")
    assert fashion.parse_args([]).tv == 15.0                  # Fashion-MNIST: TV at full length
    assert fashion.parse_args(["--quick"]).tv == 0.0          # ... and not in --quick
    assert fashion.parse_args(["--quick", "--tv", "5"]).tv == 5.0   # given equal to the default
    args = fashion.parse_args(["--quick", "--batch-size", "256", "--augment"])
    assert (args.batch_size, args.augment, args.width) == (256, True, fashion.SETTINGS["width"][2])
    mnist = load_script("mnist_inversion")
    # the same for MNIST
    assert (mnist.parse_args([]).tv, mnist.parse_args(["--quick"]).tv) == (5.0, 0.0)
    cifar = load_script("cifar10_inversion")
    assert cifar.parse_args([]).tv == 0.0
    medium = cifar.parse_args(["--medium", "--generator-steps", "7"])
    assert (medium.generator_steps, medium.out_dir) == (7, "runs/CIFAR10-medium")
    # as given
    assert cifar.parse_args(["--quick", "--out-dir", "runs/CIFAR10"]).out_dir == "runs/CIFAR10"
    for key, value in cifar.SETTINGS.items():                 # each length reads its column
        full, mid, quick = value if isinstance(value, tuple) else (value,) * 3
        assert getattr(medium, key) == (7 if key == "generator_steps" else mid), key
        assert (getattr(cifar.parse_args([]), key) == full
                and getattr(cifar.parse_args(["--quick"]), key) == quick)
    paper = fashion.parse_args(["--paper", "--gamma", "2"])     # the paper's loss, gamma as given
    assert ((paper.alpha, paper.beta, paper.gamma, paper.robust_eps, paper.stats, paper.tv)
            == (1, 1, 2, 0, 0, 0))
    # --paper keeps the length
    assert cifar.parse_args(["--paper", "--quick"]).classifier_epochs == 2
    # the colour datasets' twins, generator prior and threefold statistics prior: on at full
    # length and --medium, off at --quick and with --paper (or --no-twins)
    for colour in (cifar, load_script("svhn_inversion")):
        for length in ([], ["--medium"]):
            args = colour.parse_args(length)
            assert (args.twins, args.generator_stats, args.stats) == (True, 1.0, 3.0), length
        quick = colour.parse_args(["--quick"])
        assert (quick.twins, quick.generator_stats, quick.stats) == (False, 0.0, 1.0)
        paper = colour.parse_args(["--paper", "--medium"])
        assert (paper.twins, paper.generator_stats, paper.stats) == (False, 0.0, 0.0)
        assert colour.parse_args(["--medium", "--no-twins"]).twins is False
    # Fashion-MNIST: the same recipe with a tenfold statistics prior and --tv 15, at full length
    # and --medium; --quick keeps one generator and none of it
    recipe = ("num_generators", "twins", "generator_stats", "stats", "tv", "mode_seeking",
              "cos_pairs", "gamma")
    for length in ([], ["--medium"]):
        args = fashion.parse_args(length)
        assert tuple(getattr(args, k) for k in recipe) == (10, True, 1.0, 10.0, 15.0, 1.0,
                                                           "class", 10.0), length
    quick = fashion.parse_args(["--quick"])
    assert tuple(getattr(quick, k) for k in recipe) == (1, False, 0.0, 1.0, 0.0, 0.0, "all", 1.0)
    paper = fashion.parse_args(["--paper", "--medium"])
    assert ((paper.twins, paper.generator_stats, paper.stats, paper.cos_pairs)
            == (False, 0, 0, "all"))


def test_every_script_takes_the_same_flags_and_every_flag_has_a_value(script):
    # the flags are the contract the README and the tests rely on: the same names in all four,
    # none left without a value, and --paper able to tell a flag given from one not given
    args = vars(script.parse_args([]))
    assert sorted(args) == sorted(vars(load_script("mnist_inversion").parse_args([])))
    assert all(value is not None for key, value in args.items() if key != "margin"), args
    # --paper undoes only SETTINGS' values
    assert set(common.PAPER) <= set(script.SETTINGS)
    assert set(script.SETTINGS) <= set(args)


def test_help_shows_every_default_and_each_length(capsys):
    with pytest.raises(SystemExit) as e:
        load_script("cifar10_inversion").parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0
    assert "3000; --medium 1500; --quick 400" in text and "(default: 0.002)" in text
    assert "None" not in text


@pytest.mark.slow
def test_frechet_scale_tool_scores_a_finished_run(tmp_path):
    out = tmp_path / "run"
    load_script("mnist_inversion").main(["--fake-data", "--dry-run", "--device", "cpu",
                                         "--out-dir", str(out), "--eval-per-class", "20"])
    spec = importlib.util.spec_from_file_location("frechet_scale",
                                                  ROOT / "tools" / "frechet_scale.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    dist = tool.run([str(out), "--script", "mnist_inversion", "--fake-data"])
    assert list(dist)[:2] == ["samples (samples.pt)", "training images"] and len(dist) == 9
    assert all(math.isfinite(d) and d >= 0 for d in dist.values())
    assert dist["class mean images"] > dist["training images"]     # no within-class variety at all
    assert (out / "frechet_scale.png").stat().st_size > 0
    with pytest.raises(common.UserError, match="samples.pt not found"):
        tool.run([str(tmp_path / "nowhere"), "--fake-data"])


@pytest.mark.slow
def test_measure_alone_rescores_a_finished_run_and_refuses_a_folder_that_is_not_one(tmp_path):
    out = tmp_path / "run"
    first = load_script("svhn_inversion").main(TINY + ["--out-dir", str(out),
                                                       "--eval-per-class", "4"])
    (out / "metrics.json").unlink()
    (out / "judge2.pt").unlink()                    # trained again on the rescore: the same judge
    result = subprocess.run([sys.executable, str(ROOT / "measure.py"), str(out), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    again = json.loads((out / "metrics.json").read_text())
    assert again["dataset"] == "SVHN" and again["judge"] == first["judge"]     # the cached judge
    # same samples.pt
    for key in ("target_accuracy", "judge_accuracy", "diversity_ratio", "nn_distance"):
        assert again["inversion"][key] == pytest.approx(first["inversion"][key], abs=1e-6), key
    assert again["second_judge"] == pytest.approx(first["second_judge"], abs=1e-6)
    assert again["inversion"]["second_judge"] == pytest.approx(first["inversion"]["second_judge"],
                                                               abs=1e-6)
    result = subprocess.run([sys.executable, str(ROOT / "measure.py"), str(tmp_path / "nowhere")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (len(result.stderr.strip().splitlines()) == 1
            and "generator.pt not found" in result.stderr)
