"""Throughput of this project's training loops against a plain baseline, in one run.

    python benchmark.py --device cpu --quick       # under two minutes on a 2-core CPU
    python benchmark.py                           # on the GPU if there is one

For each image shape (1x28x28: the MNIST/Fashion-MNIST scripts; 3x32x32: SVHN/CIFAR-10) it
times, in images per second:
  classifier training   project: the whole split on the device, batches by indexing a random
                        permutation, augmentation on the device, no host sync per step
                        (the scripts' train_classifier loop), images and weights channels-last
                        on a CPU (common.place); baseline: a DataLoader over a
                        TensorDataset on the CPU, each batch copied to the device, loss.item()
                        every step.
  inversion training    project: the script's inversion_step with the paper's loss alone
                        (--paper), terms kept on the device, the project's layout, and on
                        CUDA recorded once as a CUDA graph and replayed (common.GraphedStep,
                        --cuda-graph, the scripts' default);
                        baseline: the same models and loss, with the hot matrix H built row by
                        row on the CPU and copied over, and every loss term read with .item()
                        each step (the usual way of logging).
It also times the project's inversion step with --amp (bfloat16 autocast; skipped on a CPU
that emulates bfloat16, as the scripts then run in float32), the scripts' whole default step
(robust term and statistics prior included: "full"), and on CUDA the step run eagerly
(--no-cuda-graph).  Everything runs on the scripts' device settings (common.choose_device:
TF32 and tuned convolutions on CUDA).
The last line printed is one JSON object; keys ending in "speedup" are project / baseline.
"""
import json
import time

import torch
import torch.nn.functional as F

import cifar10_inversion
import common
import fashion_inversion


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, steps, device):
    """Images/s of `steps` calls of fn() (which returns its batch size)."""
    sync(device)
    t0 = time.perf_counter()
    images = sum(fn() for _ in range(steps))
    sync(device)
    return images / (time.perf_counter() - t0)


def best_of_rounds(fns, steps, rounds, device):
    """fns: {key: (fn, warm-up calls)}.  Warm each up, then time them in turn, round after
    round, and keep each one's best round: project and baseline see the same machine, and a
    busy moment of a shared machine does not decide a ratio."""
    rates = {}
    for key, (fn, warmup) in list(fns.items()):
        try:
            for _ in range(warmup):
                fn()
        except Exception as e:                       # e.g. a variant this device cannot run
            print(f"{key}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
            del fns[key]
    for _ in range(rounds):
        for key, (fn, _) in fns.items():
            rates[key] = max(rates.get(key, 0.0), timed(fn, steps, device))
    return rates


def classifier_project(f, x, y, batch, device):
    opt = torch.optim.Adam(f.parameters(), lr=1e-3)
    order = torch.randperm(len(x), device=device)
    state = {"i": 0}

    def step():
        i = state["i"] % (len(x) // batch)
        state["i"] += 1
        idx = order[i * batch:(i + 1) * batch]
        loss = F.cross_entropy(f(common.augment(x[idx])), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return batch
    return step


def classifier_baseline(f, x, y, batch, device):
    opt = torch.optim.Adam(f.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.cpu(), y.cpu()),
                                         batch_size=batch, shuffle=True, drop_last=True)
    state = {"it": iter(loader)}
    log = []

    def step():
        try:
            xb, yb = next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            xb, yb = next(state["it"])
        xb, yb = xb.to(device), yb.to(device)
        xb = common.augment(xb)
        loss = F.cross_entropy(f(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.append(loss.item())
        return batch
    return step


def inversion_baseline(G, f, opt, args, device):
    n, N = 10, args.batch_size
    z = torch.randn(N, args.latent_dim, device=device)
    v = torch.randn(N, n, device=device)
    p = torch.softmax(v, 1)
    y = p.argmax(1)
    H = torch.zeros(N, 1, n, n)
    for i, label in enumerate(y.tolist()):              # row by row on the CPU
        H[i, 0, label, :] = 1
        H[i, 0, :, label] = 1
    x = G(z, p, H.to(device))
    phi = f.features(x)
    logits = f.head(phi)
    terms = [common.kl_term(logits, p), common.ce_term(logits, y), common.cosine_term(phi)]
    loss = args.alpha * terms[0] + args.beta * terms[1] + args.gamma * terms[2]
    opt.zero_grad()
    loss.backward()
    opt.step()
    [t.item() for t in terms] + [loss.item()]           # logged every step
    return N


def inversion_fn(mod, name, extra, x, y, batch, device):
    """(one inversion training step returning its batch size, warm-up steps) for a variant."""
    torch.manual_seed(0)
    args = mod.parse_args(["--batch-size", str(batch), "--device", device.type,
                           "--num-generators", "1"] + extra)             # one G, as measured before
    place = (lambda m: m.to(device)) if name == "baseline" else (lambda m: common.place(m, device))
    f = place(mod.Classifier()).eval().requires_grad_(False)
    stats = common.feature_statistics(f, x, y, 10)       # for the statistics prior ("full")
    G = place(mod.build_generator(args)).train()
    if name == "baseline":
        opt = torch.optim.Adam(G.parameters(), lr=1e-4)
        return (lambda: inversion_baseline(G, f, opt, args, device)), 3
    graph = args.cuda_graph and device.type == "cuda"   # as the scripts run it
    opt = torch.optim.Adam(G.parameters(), lr=1e-4, capturable=graph)
    step = lambda: mod.inversion_step(G, f, opt, args, stats, device)           # noqa: E731
    step = common.GraphedStep(step) if graph else step
    return (lambda: (step(), batch)[1]), 4


def bench_shape(mod, device, args_cli, results):
    C, S, _ = mod.SHAPE
    tag = f"{C}x{S}x{S}"
    cb, gb = args_cli.classifier_batch, args_cli.generator_batch
    x = torch.rand(max(8 * cb, 4096), C, S, S, device=device)
    y = torch.randint(0, 10, (len(x),), device=device)
    fns = {}
    for name, make in [("baseline", classifier_baseline), ("project", classifier_project)]:
        torch.manual_seed(0)
        f = mod.Classifier().to(device).train()
        # the project's memory layout (channels-last on a CPU)
        if name == "project":
            f, x = common.place(f, device), common.place(x, device)
        fns[f"classifier_{tag}_{name}"] = (make(f, x, y, cb, device), 3)
    for name, extra in inversion_variants(device):
        fns[f"inversion_{tag}_{name}"] = inversion_fn(mod, name, extra, x, y, gb, device)
    results.update(best_of_rounds(fns, args_cli.steps, args_cli.rounds, device))
    for phase in ("classifier", "inversion"):
        results[f"{phase}_{tag}_speedup"] = (results[f"{phase}_{tag}_project"]
                                             / results[f"{phase}_{tag}_baseline"])


def inversion_variants(device):
    """(name, flags): "project" is what the scripts run on this device (on CUDA: the step as a CUDA
    graph), with the paper's loss alone, as in the baseline (which has no robust term or statistics
    prior); "full" is the scripts' whole default step.  No --amp where a CPU emulates bfloat16."""
    paper = ["--paper"]
    amp = [] if common.emulated_bf16(device) else [("project_amp", paper + ["--amp"])]
    eager = [("project_eager", paper + ["--no-cuda-graph"])] if device.type == "cuda" else []
    return [("project", paper), ("baseline", paper)] + amp + [("project_full", [])] + eager


EXTRA_ROWS = [("eager", "--no-cuda-graph"), ("amp", "--amp"), ("full", "(whole default step)")]


def bench(argv=None):
    ap = common.argument_parser(__doc__)
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    ap.add_argument("--quick", action="store_true",
                    help="fewer, smaller steps (a 2-core CPU in < 2 min)")
    ap.add_argument("--steps", type=common.POSITIVE, default=None, help="timed steps per round")
    ap.add_argument("--rounds", type=common.POSITIVE, default=3,
                    help="rounds of timing, every measurement in turn; each keeps its best round")
    args = ap.parse_args(argv)
    # as the scripts: a missing GPU is one line
    device = common.choose_device(args.device)
    args.classifier_batch, args.generator_batch = (128, 64) if args.quick else (512, 256)
    args.steps = args.steps or (3 if args.quick else 50)
    results = {"device": str(device) + (f" ({torch.cuda.get_device_name()})"
                                        if device.type == "cuda" else ""),
               "threads": torch.get_num_threads(), "steps": args.steps, "rounds": args.rounds,
               "classifier_batch": args.classifier_batch, "generator_batch": args.generator_batch}
    if common.emulated_bf16(device):
        results["amp"] = ("skipped: bfloat16 is emulated on this CPU "
                          f"({common.emulated_bf16(device)})")
    for mod in (fashion_inversion, cifar10_inversion):
        bench_shape(mod, device, args, results)
    print(f"\n{'measurement (images/s)':<40} {'project':>10} {'baseline':>10} {'speedup':>8}")
    for key in [k for k in results if k.endswith("_speedup")]:
        base = key[:-len("_speedup")]
        print(f"{base:<40} {results[base + '_project']:>10.0f} "
              f"{results[base + '_baseline']:>10.0f} {results[key]:>8.2f}")
        for extra, label in EXTRA_ROWS:
            if f"{base}_project_{extra}" in results:
                print(f"{base + ' ' + label:<40} {results[base + '_project_' + extra]:>10.0f}")
            elif extra == "amp" and "amp" in results and base.startswith("inversion"):
                print(f"{base + ' ' + label:<40} {results['amp']}")
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in results.items()}))
    return results


def main(argv=None):
    return common.run_main(bench, argv, "benchmark.py")


if __name__ == "__main__":
    main()
