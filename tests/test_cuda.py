"""The CUDA path (skipped without a CUDA GPU, so on CI): a step recorded as a CUDA graph
trains exactly as the same step run eagerly, draws fresh random numbers on every replay, and
each script runs end to end on the GPU with its default --cuda-graph."""
import json

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
    losses = [step()[0].item() for _ in range(6)]
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
    assert saved["history"]["step"] == [10, 20, 30]
    assert 0.0 <= saved["distillation"]["from_generator"] <= 1.0
    assert 0.0 <= saved["inversion"]["target_accuracy"] <= 1.0
