"""The CUDA path (skipped without a CUDA GPU, so on CI): a step recorded as a CUDA graph
trains exactly as the same step run eagerly, draws fresh random numbers on every replay, and
each script runs end to end on the GPU with its default --cuda-graph; --resume moves a run
between the CPU, CUDA and the graph, and after an interrupt during replay; --amp; two generators."""
import json
import math
import signal
import warnings

import pytest
import torch
import torch.nn as nn

import common
from conftest import SCRIPTS, load_script

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model_and_step(seed=0):
    """A small model trained by Adam on fixed inputs: a step with no randomness in it."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1)).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, capturable=True)
    x = torch.linspace(-1, 1, 64 * 8, device="cuda").view(64, 8)
    target = x.sin().sum(1, keepdim=True)

    def step():
        loss = (model(x) - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return model, step


@cuda
def test_graphed_step_trains_exactly_as_the_eager_step():
    eager_model, eager_step = _model_and_step()
    eager = [eager_step().item() for _ in range(10)]
    graph_model, step = _model_and_step()
    graphed_step = common.GraphedStep(step, warmup=3)
    graphed = [graphed_step().item() for _ in range(10)]
    assert graphed_step.graph is not None                       # calls 4..10 were replays
    assert eager[-1] < eager[0]                                  # it trains at all
    torch.testing.assert_close(torch.tensor(graphed), torch.tensor(eager), rtol=1e-5, atol=1e-6)
    for a, b in zip(graph_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@cuda
def test_graphed_inversion_step_draws_new_noise_on_every_replay():
    mod = load_script("fashion_inversion")
    args = mod.parse_args(["--device", "cuda", "--batch-size", "32", "--width", "16"])
    device = torch.device("cuda")
    f = common.place(mod.Classifier(), device).eval().requires_grad_(False)
    x = torch.rand(200, *mod.SHAPE, device=device)
    stats = common.feature_statistics(f, x, torch.arange(200, device=device) % 10, 10)
    G = common.place(mod.build_generator(args), device).train()
    opt = torch.optim.Adam(G.parameters(), lr=0.0, capturable=True)      # lr 0: G stays put
    step = common.GraphedStep(lambda: mod.inversion_step(G, f, opt, args, stats, device), warmup=2)
    losses = [step()["loss"].item() for _ in range(6)]
    assert step.graph is not None
    assert len(set(losses[2:])) == 4, losses                     # same G, new z and p each replay


@cuda
@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_runs_on_cuda_with_its_default_cuda_graph(tmp_path, name, capsys):
    mod = load_script(name)
    metrics = mod.main(["--fake-data", "--device", "cuda", "--out-dir", str(tmp_path),
                        "--classifier-epochs", "1", "--generator-steps", "30", "--log-every", "10",
                        "--eval-per-class", "8", "--width", "32", "--distill-steps", "20"])
    assert "(as a CUDA graph)" in capsys.readouterr().out
    assert metrics["device"].startswith("cuda")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert [line["step"] for line in saved["history"]] == [10, 20, 30]
    assert 0.0 <= saved["distillation"]["from_generator"] <= 1.0
    assert 0.0 <= saved["inversion"]["target_accuracy"] <= 1.0


def train_g(out, device, steps, *flags):
    """Fashion-MNIST's train_generator against a fixed random f, briefly; the saved generator.pt."""
    mod = load_script("fashion_inversion")
    args = mod.parse_args(["--fake-data", "--device", device, "--out-dir", str(out),
                           "--batch-size", "32", "--width", "16", "--generator-steps", str(steps),
                           "--log-every", "5", *flags])
    dev = torch.device(device)
    torch.manual_seed(0)
    f = common.place(mod.Classifier(), dev).eval().requires_grad_(False)
    x = torch.rand(200, *mod.SHAPE, device=dev)
    mod.train_generator(f, common.feature_statistics(f, x, torch.arange(200, device=dev) % 10, 10),
                        args, out, dev)
    return torch.load(out / "generator.pt", weights_only=False)


def assert_trained_to(ckpt, steps, capturable):
    """The saved step, Adam's own count of updates and its mode agree; the loss stayed finite."""
    assert ckpt["step"] == steps
    assert [g["capturable"] for g in ckpt["optimizer"]["param_groups"]] == [capturable]
    assert all(s["step"].item() == steps and s["step"].is_cuda is capturable
               for s in ckpt["optimizer"]["state"].values())
    assert all(math.isfinite(line["loss"]) for line in ckpt["history"])


@cuda
@pytest.mark.parametrize("first", [["--device", "cuda"], ["--device", "cpu"],
                                   ["--device", "cuda", "--no-cuda-graph"]])
def test_resume_under_the_graph_from_a_graph_cpu_or_eager_checkpoint(tmp_path, first, capsys):
    assert_trained_to(train_g(tmp_path, first[1], 10, *first[2:]), 10,
                      capturable=first == ["--device", "cuda"])
    capsys.readouterr()
    assert_trained_to(train_g(tmp_path, "cuda", 20, "--resume"), 20, capturable=True)
    out = capsys.readouterr().out
    assert "from step 10" in out and "(as a CUDA graph)" in out


@cuda
def test_a_graph_checkpoint_resumes_on_the_cpu(tmp_path):
    assert_trained_to(train_g(tmp_path, "cuda", 10), 10, capturable=True)
    assert_trained_to(train_g(tmp_path, "cpu", 14, "--resume"), 14, capturable=False)


@cuda
def test_interrupt_during_replay_then_resume(tmp_path, monkeypatch, capsys, ctrl_c):
    replay, replays = torch.cuda.CUDAGraph.replay, []

    def replay_then_ctrl_c(self):
        replay(self)
        replays.append(1)
        # step 3 + 5: Ctrl-C as a replay returns
        if len(replays) == 5:
            signal.raise_signal(signal.SIGINT)
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", replay_then_ctrl_c)
    with pytest.raises(SystemExit) as e:
        train_g(tmp_path, "cuda", 20)
    assert e.value.code == 130 and "interrupted at step 8" in capsys.readouterr().err
    assert_trained_to(torch.load(tmp_path / "generator.pt", weights_only=False), 8, capturable=True)
    monkeypatch.undo()
    assert_trained_to(train_g(tmp_path, "cuda", 20, "--resume"), 20, capturable=True)


@cuda
def test_amp_under_the_graph(tmp_path, capsys):
    assert_trained_to(train_g(tmp_path, "cuda", 12, "--amp"), 12, capturable=True)
    assert "(as a CUDA graph)" in capsys.readouterr().out


@cuda
def test_two_generators_end_to_end_on_cuda(tmp_path):
    metrics = load_script("mnist_inversion").main(["--fake-data", "--dry-run", "--device", "cuda",
                                                   "--out-dir", str(tmp_path),
                                                   "--num-generators", "2", "--width", "32"])
    assert metrics["device"].startswith("cuda")
    ckpt = torch.load(tmp_path / "generator.pt", weights_only=False)
    assert ckpt["step"] == 4 and ckpt["arch"].startswith("Generators/")
    assert {key.split(".")[0] for key in ckpt["model"]} == {"0", "1"}          # two generators
    assert (tmp_path / "samples.png").is_file()


@cuda
def test_a_step_that_cannot_be_recorded_runs_without_the_graph(capsys):
    model, step = _model_and_step()
    losses = []

    def step_with_a_host_sync():                                 # .item(): no CUDA graph records it
        losses.append(step().item())
        return torch.tensor(losses[-1])
    graphed = common.GraphedStep(step_with_a_host_sync, warmup=2)
    for _ in range(5):
        graphed()
    assert graphed.graph is False and len(losses) == 5 and losses[-1] < losses[0]
    out = capsys.readouterr().out
    assert out.count("cannot be recorded as a CUDA graph") == 1


@cuda
def test_warm_up_steps_give_no_advice_to_drop_capturable():
    # PyTorch's "This instance was constructed with capturable=True ... you should set
    # capturable=False" is armed only in an unpickled optimizer (Optimizer.__init__ marks it as
    # given): the eager warm-up steps of a fresh capturable Adam do not print it
    _, step = _model_and_step()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphed = common.GraphedStep(step, warmup=3)
        for _ in range(5):
            graphed()
    assert graphed.graph is not None
    assert not [w for w in caught if "capturable" in str(w.message)]
