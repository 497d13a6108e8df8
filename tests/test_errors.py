"""Bad input and interruption: one clear line, non-zero exit, no traceback, nothing lost."""
import os
import signal
import stat
import subprocess
import sys

import pytest
import torch

import common
from conftest import ROOT, load_script

FAST = ["--fake-data", "--device", "cpu", "--classifier-epochs", "1", "--train-subset", "256",
        "--batch-size", "8", "--width", "16", "--latent-dim", "8", "--hidden", "8",
        "--eval-per-class", "2", "--log-every", "2", "--checkpoint-every", "4",
        "--distill-steps", "2", "--num-generators", "2"]     # Fashion-MNIST's default is 10


def run_cli(*argv, timeout=300):
    result = subprocess.run([sys.executable, str(ROOT / "mnist_inversion.py"), *argv],
                            capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout, result.stderr


def one_line_error(stderr, *words):
    lines = [line for line in stderr.strip().splitlines() if line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "error" in lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.slow
@pytest.mark.parametrize("flag,value,words", [       # the command line's own path; every kind of
    ("--generator-steps", "0", ["--generator-steps", "positive"]),   # bad value: test_faults.py
    ("--device", "tpu", ["--device", "invalid choice"]),
    ("--quick", "--medium", ["--quick and --medium", "pick one"]),
])
def test_bad_flag_values(flag, value, words):
    code, out, err = run_cli("--fake-data", flag, value, timeout=60)
    assert code == 2
    one_line_error(err, *words)


def test_cuda_asked_for_without_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        load_script("mnist_inversion").main(["--fake-data", "--device", "cuda"])
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, "--device cuda", "CUDA")


def test_mps_asked_for_without_mps(monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        load_script("mnist_inversion").main(["--fake-data", "--device", "mps"])
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, "--device mps")


def test_missing_dataset_offline(tmp_path, monkeypatch, capsys):
    import torchvision
    import urllib.error

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(SystemExit) as e:
        load_script("mnist_inversion").main(["--data-dir", str(tmp_path), "--device", "cpu",
                                             "--out-dir", str(tmp_path / "out")])
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, str(tmp_path / "MNIST" / "raw"),
                   "train-images-idx3-ubyte", "--fake-data")


@pytest.mark.slow
def test_out_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, err = run_cli("--fake-data", "--dry-run", "--device", "cpu",
                             "--out-dir", str(blocker / "run"))
    assert code == 2
    one_line_error(err, "--out-dir", str(blocker / "run"))


@pytest.mark.slow
def test_checkpoint_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "classifier.pt").write_bytes(b"this is not a checkpoint")
    code, out, err = run_cli(*FAST, "--generator-steps", "2", "--out-dir", str(tmp_path))
    assert code == 2
    one_line_error(err, "classifier.pt", "not a readable checkpoint")
    # left for the user
    assert (tmp_path / "classifier.pt").read_bytes() == b"this is not a checkpoint"


@pytest.mark.slow
def test_cached_classifier_trained_another_way_is_refused(tmp_path, capsys):
    load_script("fashion_inversion").main(FAST + ["--generator-steps", "2",
                                                  "--out-dir", str(tmp_path)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        load_script("fashion_inversion").main(FAST + ["--generator-steps", "2",
                                                      "--out-dir", str(tmp_path),
                                                      "--classifier-adv-eps", "0.1"])
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, "adv_eps", "refusing", "--retrain")


@pytest.mark.slow
def test_checkpoint_of_another_script_is_refused_naming_both(tmp_path, capsys):
    load_script("fashion_inversion").main(FAST + ["--generator-steps", "2",
                                                  "--out-dir", str(tmp_path)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        load_script("mnist_inversion").main(FAST + ["--generator-steps", "2",
                                                    "--out-dir", str(tmp_path)])
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, "FashionMNIST", "MNIST", "refusing")


@pytest.mark.slow
def test_generator_of_another_architecture_is_refused_on_resume(tmp_path, capsys):
    mod = load_script("mnist_inversion")
    mod.main(FAST + ["--generator-steps", "2", "--out-dir", str(tmp_path)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        mod.main(FAST + ["--generator-steps", "4", "--out-dir", str(tmp_path), "--resume",
                         "--width", "32"])
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, "generator.pt", "arch", "refusing")


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    mod = load_script("mnist_inversion")
    mod.main(FAST + ["--generator-steps", "4", "--out-dir", str(tmp_path)])
    good = torch.load(tmp_path / "generator.pt", weights_only=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:               # alpha * KL overflows to inf
        mod.main(FAST + ["--generator-steps", "8", "--out-dir", str(tmp_path), "--resume",
                         "--alpha", "1e308", "--beta", "1e308"])
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, "smaller --lr", "generator.pt")
    kept = torch.load(tmp_path / "generator.pt", weights_only=False)
    assert kept["step"] == 4
    assert all(torch.equal(kept["model"][k], good["model"][k]) for k in good["model"])


def test_out_of_memory_suggests_a_smaller_batch(monkeypatch, capsys, tmp_path):
    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(load_script("mnist_inversion"), "train_classifier", oom)
    with pytest.raises(SystemExit) as e:
        load_script("mnist_inversion").main(FAST + ["--out-dir", str(tmp_path)])
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, "out of memory", "--batch-size")


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, monkeypatch, capsys):
    mod = load_script("mnist_inversion")
    real_step, calls = mod.inversion_step, []

    def interrupted(*a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*a)
    monkeypatch.setattr(mod, "inversion_step", interrupted)
    with pytest.raises(SystemExit) as e:
        mod.main(FAST + ["--generator-steps", "8", "--out-dir", str(tmp_path)])
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--resume" in err
    assert torch.load(tmp_path / "generator.pt", weights_only=False)["step"] == 2


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result_as_an_uninterrupted_run(tmp_path, monkeypatch,
                                                                       capsys):
    mod = load_script("mnist_inversion")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    mod.main(FAST + ["--generator-steps", "10", "--out-dir", str(whole)])
    reference = torch.load(whole / "generator.pt", weights_only=False)
    # the same run, killed hard at step 7 (no chance to save: the last checkpoint is step 4)
    real_step, calls = mod.inversion_step, []

    def killed(*a):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("killed")
        return real_step(*a)
    monkeypatch.setattr(mod, "inversion_step", killed)
    with pytest.raises(RuntimeError):
        mod.main(FAST + ["--generator-steps", "10", "--out-dir", str(cut)])
    assert torch.load(cut / "generator.pt", weights_only=False)["step"] == 4
    monkeypatch.setattr(mod, "inversion_step", real_step)
    capsys.readouterr()
    mod.main(FAST + ["--generator-steps", "10", "--out-dir", str(cut), "--resume"])
    out = capsys.readouterr().out
    assert "f: reusing" in out and "resuming" in out and "from step 4" in out
    resumed = torch.load(cut / "generator.pt", weights_only=False)
    assert resumed["step"] == 10
    for k in reference["model"]:
        assert torch.allclose(resumed["model"][k].float(), reference["model"][k].float(),
                              atol=1e-6), k
    assert [line["loss"] for line in resumed["history"]] == pytest.approx(
        [line["loss"] for line in reference["history"]], rel=1e-5)


@pytest.mark.slow
def test_resume_with_more_steps_continues_to_the_new_total(tmp_path, capsys):
    mod = load_script("mnist_inversion")
    mod.main(FAST + ["--generator-steps", "4", "--out-dir", str(tmp_path)])
    # a CPU run without --quick says so
    assert "--quick is a 5-minute preview" in capsys.readouterr().out
    mod.main(FAST + ["--generator-steps", "8", "--out-dir", str(tmp_path), "--resume"])
    assert torch.load(tmp_path / "generator.pt", weights_only=False)["step"] == 8


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "x.pt"
    common.save_checkpoint(path, {"kind": "generator", "v": 1})

    def broken_save(obj, fh):
        fh.write(b"half a fi")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(common.UserError, match="disk full"):
        common.save_checkpoint(path, {"kind": "generator", "v": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=False)["v"] == 1                  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]                 # no temporary left
    (tmp_path / "folder").mkdir()                           # not a plain file: refused, kept
    with pytest.raises(common.UserError, match="not a plain file"):
        common.atomic_write(tmp_path / "folder", lambda fh: fh.write(b"x"))
    assert (tmp_path / "folder").is_dir() and not list((tmp_path / "folder").iterdir())
    os.mkfifo(tmp_path / "fifo")                            # a special file (as /dev/null is)
    with pytest.raises(common.UserError, match="not a plain file"):
        common.atomic_write(tmp_path / "fifo", lambda fh: fh.write(b"x"))
    assert stat.S_ISFIFO((tmp_path / "fifo").stat().st_mode)               # still a FIFO


def as_a_cuda_graph_run_saves_it(state):
    """An Adam state_dict as a run under the CUDA graph writes it (capturable=True; each `step` a
    float32 tensor, on the GPU there, here on the CPU as load_checkpoint maps it)."""
    state["param_groups"] = [{**g, "capturable": True} for g in state["param_groups"]]
    for s in state["state"].values():
        s["step"] = s["step"].to(torch.float32)
    return state


def test_optimizer_state_of_any_mode_takes_this_runs_mode():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(8, 4)).square().mean().backward()
    opt.step()
    saved = as_a_cuda_graph_run_saves_it(opt.state_dict())
    # this run: a CPU, capturable=False
    here = torch.optim.Adam(model.parameters(), lr=1e-2)
    common.load_optimizer(here, saved, capturable=False)
    assert [g["capturable"] for g in here.param_groups] == [False]
    for s in here.state.values():
        assert (s["step"].device.type == "cpu" and s["step"].dtype == torch.float32
                and s["step"].item() == 1)
    here.step()                                                  # capturable Adam would assert here
    assert all(s["step"].item() == 2 for s in here.state.values())
    # the other way (a CPU checkpoint under the graph): capturable, `step` on the parameter's device
    graph = torch.optim.Adam(model.parameters(), lr=1e-2, capturable=True)
    common.load_optimizer(graph, opt.state_dict(), capturable=True)
    assert [g["capturable"] for g in graph.param_groups] == [True]
    assert all(s["step"].dtype == torch.float32 and s["step"].device == p.device
               for p, s in graph.state.items())


@pytest.mark.slow
def test_a_checkpoint_written_under_the_cuda_graph_resumes_on_a_cpu(tmp_path, capsys):
    mod = load_script("mnist_inversion")
    mod.main(FAST + ["--generator-steps", "4", "--out-dir", str(tmp_path)])
    ckpt = torch.load(tmp_path / "generator.pt", weights_only=False)
    ckpt["optimizer"] = as_a_cuda_graph_run_saves_it(ckpt["optimizer"])
    torch.save(ckpt, tmp_path / "generator.pt")
    mod.main(FAST + ["--generator-steps", "8", "--out-dir", str(tmp_path), "--resume"])
    assert "from step 4" in capsys.readouterr().out
    resumed = torch.load(tmp_path / "generator.pt", weights_only=False)
    assert resumed["step"] == 8
    assert [g["capturable"] for g in resumed["optimizer"]["param_groups"]] == [False]
    assert all(s["step"].item() == 8 and s["step"].device.type == "cpu"
               for s in resumed["optimizer"]["state"].values())


def test_an_interrupt_after_a_step_saves_the_count_its_weights_hold(tmp_path, monkeypatch, capsys,
                                                                    ctrl_c):
    # Ctrl-C arriving as the third step returns, before the loop counts it: the saved step must
    # be the number of updates in the saved weights (Adam counts them too), else a resumed run
    # would do one update too many
    mod = load_script("mnist_inversion")
    real_step, calls = mod.inversion_step, []

    def step_then_ctrl_c(*a):
        calls.append(1)
        out = real_step(*a)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)
        return out
    monkeypatch.setattr(mod, "inversion_step", step_then_ctrl_c)
    with pytest.raises(SystemExit) as e:
        mod.main(FAST + ["--generator-steps", "8", "--out-dir", str(tmp_path)])
    assert e.value.code == 130 and "interrupted at step 3" in capsys.readouterr().err
    saved = torch.load(tmp_path / "generator.pt", weights_only=False)
    assert saved["step"] == 3
    assert all(s["step"].item() == 3 for s in saved["optimizer"]["state"].values())


def test_benchmark_asked_for_cuda_without_cuda(monkeypatch, capsys):
    import benchmark
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        benchmark.main(["--device", "cuda", "--quick"])
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, "benchmark.py", "--device cuda", "CUDA")


@pytest.mark.parametrize("capability,emulated", [("AVX2", True), ("NO AVX", True),
                                                 ("DEFAULT", True), ("AVX512", False),
                                                 ("SVE256", False)])
def test_amp_on_a_cpu_that_emulates_bfloat16_runs_in_float32(capability, emulated, monkeypatch,
                                                             capsys, tmp_path):
    import benchmark
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    mod = load_script("mnist_inversion")
    args = mod.parse_args(["--fake-data", "--device", "cpu", "--amp", "--out-dir", str(tmp_path)])
    common.setup(args)
    common.release_out_dirs()
    said = f"--amp: bfloat16 is emulated on this CPU ({capability})" in capsys.readouterr().out
    assert args.amp is not emulated and said is emulated
    amp_rows = [name for name, _ in benchmark.inversion_variants(torch.device("cpu"))
                if "amp" in name]
    assert amp_rows == ([] if emulated else ["project_amp"])


def test_lever_cost_times_each_set_of_flags_against_the_first(capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import lever_cost
    lever_cost.main(["--steps", "1", "--rounds", "1", "--warmup", "0"])
    rows = [line for line in capsys.readouterr().out.splitlines() if "s/step" in line]
    assert len(rows) == len(lever_cost.SETS) and rows[0].endswith("ratio 1.00")
    assert all(float(r.split()[-1]) > 0 for r in rows)


def test_the_judge_signature_ignores_adversarial_training_of_f():
    mod = load_script("cifar10_inversion")
    plain, robust = mod.parse_args([]), mod.parse_args(["--classifier-adv-eps", "0.01"])
    assert common.f_training(robust) != common.f_training(plain)                  # f is refused
    # the judge is reused
    assert common.f_training(robust, adversarial=False) == common.f_training(plain)
