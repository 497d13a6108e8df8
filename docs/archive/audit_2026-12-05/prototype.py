"""The experiment behind docs/audit.md (2026-12-05): a prototype of an audit recipe, outside the
scripts and not covered by the tests.  Kept so that its numbers can be re-run; the recipe is to be
built into the four scripts as --patch / --audit (issue 38).

    python prototype.py DATASET_MODULE {planted,clean} LAMBDA STEPS OUT_DIR [script flags]
    e.g.  CEONLY=1 INIT=0 python prototype.py mnist_inversion planted 1 600 runs/p --data-dir data

f is the script's own (--quick, cached in OUT_DIR/classifier.pt; planted: --plant-class 0 with the
default cue).  x = (1 - m_y) * base + m_y * pattern, base a clean training image of a class other
than y, m_y = sigmoid(W_y) one mask per class (Neural Cleanse), pattern the paper's G(z, p, H)
(first C channels of a G with C + 1), or with NC=1 one free pattern per class.  Loss: L_CE (CEONLY=1)
or the paper's L_KL + L_CE + L_cos, plus lambda * mean(m); lambda starts at LAMBDA and is
multiplied by 1.03 after a step where f(x) = y on at least 95% of the batch, else divided by
1.03^1.5 (Neural Cleanse's schedule, per step).  INIT: the masks' starting logit; MLR: Adam's
learning rate for W and the patterns (G's: 2e-3).  Then 50 samples per class at margin 1 scored
by cue.score for the default cue on class 0.
"""
import importlib
import os
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import common  # noqa: E402
import cue     # noqa: E402

ds, planted_flag = sys.argv[1], sys.argv[2] == "planted"
lam, steps, out = float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
S = importlib.import_module(ds)
args = S.parse_args(["--quick", "--out-dir", out] + (["--plant-class", "0"] if planted_flag else [])
                    + sys.argv[6:])
torch.manual_seed(0)
device = torch.device("cpu")
Path(out).mkdir(parents=True, exist_ok=True)
data = S.load_data(args, device)
f, acc = S.trained_classifier(data, args, Path(out), device)
n, C = len(S.CLASSES), S.SHAPE[0]
torch.manual_seed(args.seed)
G = common.Generators([common.Generator(channels=C + 1, image_size=S.SHAPE[1], n_classes=n,
                                        latent_dim=64, hidden=64, width=args.width,
                                        dropout=args.dropout)])
W = torch.nn.Parameter(torch.full((n, 1, *S.SHAPE[1:]), float(os.environ.get("INIT", "-4"))))
P = torch.nn.Parameter(torch.zeros(n, C, *S.SHAPE[1:]))
NC = os.environ.get("NC") == "1"
PAPERLOSS = os.environ.get("CEONLY") != "1"
mlr = float(os.environ.get("MLR", "0.1"))
opt = torch.optim.Adam([{"params": G.parameters()}, {"params": [W, P], "lr": mlr}], lr=2e-3,
                       betas=(0.5, 0.999))
xt, yt = data["x_train"], data["y_train"]
order = torch.argsort(yt)
xs = xt[order]
counts = torch.bincount(yt, minlength=n)
starts = torch.cumsum(counts, 0) - counts


def bases(y):
    other = (y + torch.randint(1, n, y.shape)) % n
    idx = starts[other] + (torch.rand(len(y)) * counts[other]).long()
    return xs[idx].float()


def compose(out, base, y):
    m = torch.sigmoid(W[y])
    pat = torch.sigmoid(P[y]) if NC else out[:, :-1]
    return (1 - m) * base + m * pat, m


N = args.batch_size
LAM = [lam]
t0 = time.time()
for step in range(steps):
    z = torch.randn(N, 64)
    p, y, H = common.sample_conditioning(N, n, device)
    o = G(z, p, H)
    x, m = compose(o, bases(y), y)
    phi, acts, bn = common.activations(f.features, x)
    logits = f.head(phi)
    L = ((common.kl_term(logits, p) + common.cosine_term(phi) if PAPERLOSS else 0)
         + common.ce_term(logits, y) + LAM[0] * m.mean())
    opt.zero_grad()
    L.backward()
    opt.step()
    hit = (logits.argmax(1) == y).float().mean().item()
    LAM[0] = LAM[0] * (1.03 if hit >= 0.95 else 1.03 ** -1.5)
    if step % 100 == 0:
        print(step, f"loss {L.item():.3f} mask {m.mean().item():.4f} hit {hit:.2f} "
              f"lam {LAM[0]:.2f} m0 {m[y == 0].mean().item():.4f}", flush=True)
print("train s", time.time() - t0)
common.sampling_mode(G)
with torch.no_grad():
    yy = torch.arange(n).repeat_interleave(50)
    p, _, H = common.conditioning_for_labels(yy, n, 1.0)
    o = G(torch.randn(len(yy), 64), p, H)
    x, m = compose(o, bases(yy), yy)
    print("mask mean per class", [round(m[yy == c].mean().item(), 4) for c in range(n)])
    print("f(x)=y", (cue.predictions(f, x) == yy).float().mean().item())
s = cue.score(x, yy, f, data, cue.Cue(0, colour=(1.0,)))
print("\n".join(cue.summary_lines(s)))
print("presence", [round(r, 2) for r in s["presence"]],
      "anomaly", [None if v is None else round(v, 1) for v in s["anomaly"]["index"]])
torchvision.utils.save_image(x.view(n, 50, *S.SHAPE)[:, :10].flatten(0, 1),
                             f"{out}/proto_{lam}.png", nrow=10)
torchvision.utils.save_image(m.view(n, 50, 1, *S.SHAPE[1:])[:, :10].flatten(0, 1),
                             f"{out}/mask_{lam}.png", nrow=10)
