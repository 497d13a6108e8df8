"""What the colour levers cost per generator step: the script's inversion_step with each set of
flags, timed in one process, interleaved, after a warm-up, on fake data (the step does not
depend on the images).  Prints seconds per step and the ratio to the first set.

    python tools/lever_cost.py                    # CIFAR-10 --medium: levers off, each on, all on
    python tools/lever_cost.py --steps 20 --rounds 3

With the ratio, a whole run's time follows from a measured one: G's phase scales by it, the
rest (f, its statistics, the judge, measuring) does not change.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchmark  # noqa: E402
import cifar10_inversion as script  # noqa: E402
import common  # noqa: E402

OFF = "--gamma 1 --cos-pairs all --bn-stats 0 --mode-seeking 0"
SETS = {"levers off (before 2026-11-29's change)": OFF,
        "--bn-stats 1": OFF + " --bn-stats 1",
        "--mode-seeking 1": OFF + " --mode-seeking 1",
        "the defaults (all on)": ""}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=15, help="timed steps per set and round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over the sets, interleaved")
    ap.add_argument("--warmup", type=int, default=10,
                    help="untimed steps first (channels-last kernels warm up)")
    cli = ap.parse_args(argv)
    device, fns = torch.device("cpu"), {}
    args = script.parse_args("--medium --device cpu".split())
    torch.manual_seed(0)
    f = (common.place(script.Classifier(len(script.CLASSES), args.classifier_width), device)
         .eval().requires_grad_(False))
    x, y = torch.rand(200, *script.SHAPE), torch.arange(200) % 10
    stats = common.feature_statistics(f, common.place(x, device), y, len(script.CLASSES))
    for name, flags in SETS.items():
        args = script.parse_args(("--medium --device cpu " + flags).split())
        G = common.place(script.build_generator(args), device).train()
        opt = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.5, 0.999))
        step = lambda a=args, G=G, opt=opt: (  # noqa: E731
            script.inversion_step(G, f, opt, a, stats, device), a.batch_size)[1]
        fns[name] = (step, cli.warmup)
    # images/s, each set's best round
    rates = benchmark.best_of_rounds(fns, cli.steps, cli.rounds, device)
    base = rates[next(iter(SETS))]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; batch {args.batch_size}, "
          f"best of {cli.rounds} rounds")
    for name, rate in rates.items():
        print(f"  {name:<42} {args.batch_size / rate:.3f} s/step   ratio {base / rate:.2f}")


if __name__ == "__main__":
    main()
