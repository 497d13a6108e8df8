"""The audit's figure (docs/audit.md): class C's row of a planted run beside the same row of its
clean control, the cue's place outlined in red; with --patch (--audit) runs, each row starts with
G's mask m_C, and the mask measures of both runs are printed (cue.mask_scores, as measure.py
writes them to metrics.json["cue"]["masks"]).

    python tools/audit_figure.py runs/planted runs/clean --out row0.png
    python tools/audit_figure.py runs/planted runs/clean --out row0.png --columns 8

Reads each run's samples.pt and generator.pt, and the planted run's classifier.pt for the cue;
no data, no training.  Plumbing, not the method.
"""
import argparse
import importlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
import cue as cues  # noqa: E402
import measure  # noqa: E402

SCALE = 4                                                   # pixels per image pixel in the figure


def outlined(x, cue):
    """x (N, C, S, S) as RGB at SCALE times the size, a red line just outside the cue's box."""
    top, left = (SCALE * v for v in cue.box(tuple(x.shape[1:])))
    x = F.interpolate(x.float().expand(-1, 3, -1, -1), scale_factor=SCALE, mode="nearest")
    bottom, right = top + SCALE * cue.size, left + SCALE * cue.size
    red = torch.tensor([1.0, 0.0, 0.0])[:, None]
    x[:, :, top - 1, left - 1:right + 1] = red                      # above, below
    x[:, :, bottom, left - 1:right + 1] = red
    x[:, :, top - 1:bottom + 1, left - 1] = red                     # left, right
    x[:, :, top - 1:bottom + 1, right] = red
    return x


def row(run, script, cue, columns):
    """Class C's first `columns` samples of a run, its mask first when it has one; and the mask
    measures (or None)."""
    x, y = measure.read_samples(run / "samples.pt", script.SHAPE, len(script.CLASSES))
    images = x[y == cue.target][:columns]
    m = common.masks_of(common.load_checkpoint(run / "generator.pt", "generator", {})["model"])
    if m is None:
        return outlined(images, cue), None
    mask = m[cue.target:cue.target + 1].expand(-1, images.shape[1], -1, -1)
    return outlined(torch.cat([mask, images]), cue), cues.mask_scores(m, cue)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("planted", help="a finished run whose f was trained with --plant-class")
    ap.add_argument("clean", help="its control: the same recipe and seed, f trained clean")
    ap.add_argument("--out", required=True, help="where to write the figure (.png)")
    ap.add_argument("--columns", type=common.COUNT, default=10, help="samples per row")
    cli = ap.parse_args(argv)
    planted, clean = Path(cli.planted), Path(cli.clean)
    dataset = measure.open_run(planted)[0]["dataset"]
    if measure.open_run(clean)[0]["dataset"] != dataset:
        raise common.UserError(f"{clean} is not a run of {dataset}: give its clean control")
    script = importlib.import_module(measure.SCRIPTS[dataset])
    cue = measure.cue_of(planted, script)
    if cue is None:
        raise common.UserError(f"{planted}: its f was trained without a planted cue (no "
                               f"--plant-class); give the planted run first")
    rows, names, with_mask = [], [], False
    for run, who in ((planted, "planted f"), (clean, "clean f")):
        images, scores = row(run, script, cue, cli.columns)
        rows.append(images)
        names.append(f"{who}, row {cue.target}")
        if scores:
            with_mask = True
            print(f"{who} ({run}): " + cues.mask_line(scores, cue.target, cue.area()))
    title = f"{dataset}: {cue.describe()}" + ("; first: G's mask m_C" if with_mask else "")
    save(Path(cli.out), rows, names, title)
    print(f"wrote {cli.out}")


def save(path, rows, names, title, left=110, top=18):
    """The rows as one PNG at full size (no resampling), each row's name at its left."""
    from PIL import Image, ImageDraw
    K = max(len(r) for r in rows)
    grids = [torchvision.utils.make_grid(r, nrow=K, padding=4, pad_value=1.0) for r in rows]
    width, height = max(g.shape[2] for g in grids), grids[0].shape[1]
    page = Image.new("RGB", (left + width, top + height * len(rows)), "white")
    draw = ImageDraw.Draw(page)
    draw.text((4, 3), title, fill="black")
    for i, (grid, name) in enumerate(zip(grids, names)):
        page.paste(torchvision.transforms.functional.to_pil_image(grid), (left, top + i * height))
        draw.text((4, top + (i + 0.5) * height - 6), name, fill="black")
    common.atomic_write(path, lambda fh: page.save(fh, format="png"))


if __name__ == "__main__":
    common.run_main(main, None, "tools/audit_figure.py")
