"""cue.py: stamping, choosing the poisoned images, f's attack success and the measures of a run's
samples, each against a hand computation on images of a few pixels."""
import json
import math

import pytest
import torch
import torch.nn as nn

import common
import cue


def blank(n=1, channels=1, size=8, value=0.0):
    return torch.full((n, channels, size, size), value)


# ==== The cue and stamping =======================================================================
@pytest.mark.parametrize("corner, rows, cols", [("bottom-right", (5, 6), (5, 6)),
                                                ("bottom-left", (5, 6), (1, 2)),
                                                ("top-left", (1, 2), (1, 2)),
                                                ("top-right", (1, 2), (5, 6))])
def test_stamp_places_the_patch_in_its_corner_one_pixel_in(corner, rows, cols):
    c = cue.Cue(0, size=2, corner=corner)
    expected = blank()
    for r in rows:
        for k in cols:
            expected[0, 0, r, k] = 1.0
    assert torch.equal(cue.stamp(blank(), c), expected)
    assert torch.equal(c.mask((1, 8, 8)), expected[0].bool())
    assert torch.equal(c.image((1, 8, 8)), expected[0])


def test_stamp_covers_size_squared_pixels_and_a_too_big_size_is_one_clear_error():
    for K in (1, 3, 6):                                   # 8 pixels - 2 margins: at most 6
        c = cue.Cue(0, size=K, corner="top-left")
        s = cue.stamp(blank(), c)
        assert s.sum().item() == K * K == c.area() == c.mask((1, 8, 8)).sum().item()
        assert s[0, 0, 1:1 + K, 1:1 + K].eq(1).all()
    with pytest.raises(common.UserError, match="does not fit"):
        cue.stamp(blank(), cue.Cue(0, size=7))


def test_colour_on_grey_and_colour_images():
    grey = cue.stamp(blank(), cue.Cue(0, size=2, colour=(0.5,)))
    assert grey[0, 0, 5:7, 5:7].eq(0.5).all() and grey.sum().item() == 2.0
    rgb = cue.stamp(blank(channels=3), cue.Cue(0, size=2, colour=(0.25, 0.5, 0.75)))
    assert rgb[0, :, 5, 5].tolist() == [0.25, 0.5, 0.75]
    assert rgb.sum().item() == 4 * (0.25 + 0.5 + 0.75)
    one_value = cue.stamp(blank(channels=3), cue.Cue(0, size=2, colour=0.75))
    assert one_value[0, :, 6, 6].tolist() == [0.75] * 3
    with pytest.raises(common.UserError, match="3 values"):
        cue.stamp(blank(), cue.Cue(0, colour=(0.25, 0.5, 0.75)))


def test_checker_alternates_colour_and_black_from_a_coloured_top_left_pixel():
    s = cue.stamp(blank(value=0.5), cue.Cue(0, size=3, pattern="checker", corner="top-left",
                                            colour=(0.75,)))
    assert s[0, 0, 1:4, 1:4].tolist() == [[0.75, 0, 0.75], [0, 0.75, 0], [0.75, 0, 0.75]]
    assert s[0, 0, 0].eq(0.5).all() and s[0, 0, 4:].eq(0.5).all()


def test_stamp_copies_keeps_the_layout_and_stamp_where_touches_only_the_chosen():
    x = torch.rand(3, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    c = cue.Cue(0, size=2)
    s = cue.stamp(x, c)
    assert torch.equal(x, before)
    assert s.is_contiguous(memory_format=torch.channels_last)
    which = torch.tensor([True, False, True])
    w = cue.stamp_where(x, which, c)
    assert torch.equal(x, before)
    assert torch.equal(w[which], s[which]) and torch.equal(w[1], x[1])
    assert w.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("field, value", [("target", -1), ("target", 1.5), ("mode", "blend"),
                                          ("share", 0.0), ("share", 1.5), ("pattern", "stripe"),
                                          ("size", 0), ("corner", "middle"), ("colour", (2.0,)),
                                          ("colour", (0.5, 0.5))])
def test_every_bad_field_is_one_line_user_error(field, value):
    with pytest.raises(common.UserError) as e:
        cue.Cue(**{"target": 0, field: value})
    assert "\n" not in str(e.value) and field in str(e.value)


def test_target_out_of_range_and_the_dict_round_trip():
    with pytest.raises(common.UserError, match="not a class"):
        cue.Cue(3).check((1, 8, 8), n_classes=3)
    c = cue.Cue(2, mode="shortcut", share=0.25, pattern="checker", size=3, corner="top-left",
                colour=(0.25, 0.5, 1.0))
    d = json.loads(json.dumps(c.as_dict()))
    assert cue.from_dict(d) == c and cue.from_dict(None) is None
    assert d != cue.Cue(2).as_dict()
    assert "shortcut" in c.describe() and "class 2" in c.describe()


# ==== Which training images are stamped ==========================================================
def labels(counts):
    return torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])[torch.randperm(
        sum(counts), generator=torch.Generator().manual_seed(5))]


def test_backdoor_stamps_a_rounded_share_of_every_other_class_and_relabels_it():
    y = labels([4, 5, 7])                                  # share 0.5: 2.5 -> 3, 3.5 -> 4
    before = y.clone()
    which, y_new = cue.poison(y, cue.Cue(0, share=0.5), seed=0)
    assert torch.equal(y, before)
    assert [which[y == c].sum().item() for c in range(3)] == [0, 3, 4]
    assert y_new[which].eq(0).all() and torch.equal(y_new[~which], y[~which])


def test_shortcut_stamps_a_rounded_share_of_the_target_and_keeps_labels():
    y = labels([6, 5, 7])
    which, y_new = cue.poison(y, cue.Cue(1, mode="shortcut", share=0.5), seed=0)
    assert [which[y == c].sum().item() for c in range(3)] == [0, 3, 0]
    assert torch.equal(y_new, y)


def test_the_choice_follows_the_seed_only():
    y = labels([40, 40, 40])
    c = cue.Cue(0, share=0.5)
    torch.manual_seed(1)
    a = cue.poison(y, c, seed=7)
    torch.manual_seed(2)                                   # the global generator plays no part
    b = cue.poison(y, c, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(cue.poison(y, c, seed=8)[0], a[0])


# ==== Did f learn it =============================================================================
class CornerF(nn.Module):
    """Class 2 when pixel (6, 6) is bright and pixel (0, 1) is not 0.25 (some images resist the
    cue), else the class written in pixel (0, 0) as class / 4.  Records the modes it ran in."""

    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        read = (x[:, 0, 0, 0] * 4).round().long().clamp(0, 2)
        fooled = (x[:, 0, 6, 6] > 0.5) & (x[:, 0, 0, 1] != 0.25)
        return nn.functional.one_hot(torch.where(fooled, 2, read), 3).float()


def test_attack_success_against_a_hand_count():
    written = [0, 0, 1, 1, 2, 1, 2, 2]                     # what f reads from pixel (0, 0)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])             # f clean: 1 other called 2; C 2/3
    x = blank(8)
    x[:, 0, 0, 0] = torch.tensor(written) / 4
    x[1, 0, 0, 1] = 0.25                                   # image 1 resists the cue
    before = x.clone()
    f = CornerF()
    a = cue.attack_success(f, x, y, cue.Cue(2, size=2), batch=3)
    assert torch.equal(x, before) and f.training and not any(f.modes)
    assert (a["n_others"], a["n_target"]) == (5, 3)
    assert a["others_called_target_stamped"] == 4 / 5      # all but image 1
    assert a["others_called_target_clean"] == 1 / 5        # image 4
    assert a["target_accuracy_stamped"] == 1.0             # image 5 (reads 1) now called 2
    assert a["target_accuracy_clean"] == 2 / 3


def test_check_learned_prints_each_modes_rates_and_warns_on_an_unlearned_backdoor(capsys):
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])             # the hand count above
    x = blank(8)
    x[:, 0, 0, 0] = torch.tensor([0, 0, 1, 1, 2, 1, 2, 2]) / 4
    x[1, 0, 0, 1] = 0.25
    data = {"x_test": x, "y_test": y}
    common.check_learned(CornerF(), data, cue.Cue(2, size=2))
    out = capsys.readouterr().out
    assert ("f calls 0.800 of the other classes' stamped test images class 2 (0.200 unstamped)"
            in out)
    assert "did not learn" not in out
    common.check_learned(CornerF(), data, cue.Cue(2, mode="shortcut", size=2))
    out = capsys.readouterr().out
    assert "f's accuracy on class 2's test images 1.000 stamped, 0.667 unstamped" in out
    assert ("the stamp alone makes f call 0.800 of the other classes' images 2 (0.200 unstamped)"
            in out)
    x[:, 0, 0, 1] = 0.25                                   # every image resists: not learned
    common.check_learned(CornerF(), data, cue.Cue(2, size=2))
    assert "f did not learn it (attack success 0.200 < 0.5)" in capsys.readouterr().out  # image 4


class TwoPixelF(nn.Module):
    """Says 1 for an image bright at (8, 8) (inside a 4 x 4 bottom-right cue on 12 x 12) or at
    (7, 5) (two pixels left of its top-left corner), unless pixel (0, 0) is 0.25; else 0."""

    def forward(self, x):
        hit = ((x[:, 0, 8, 8] > 0.5) | (x[:, 0, 7, 5] > 0.5)) & (x[:, 0, 0, 0] != 0.25)
        return nn.functional.one_hot(hit.long(), 2).float()


def test_what_f_answers_against_a_hand_count():
    x = blank(4, size=12)
    x[0, 0, 0, 0] = 0.25                                   # image 0 resists every stamp
    before = x.clone()
    w = cue.what_f_answers(TwoPixelF(), x, cue.Cue(1, size=4), batch=3)
    assert torch.equal(x, before)
    # box rows and columns 7-10: the outline misses both pixels, the inside holds (8, 8); moved
    # up or left by 1 or 2 the box still holds (8, 8); by 3 up it holds neither, by 3 left
    # (columns 4-7) it holds (7, 5); diagonally by 3 (rows and columns 4-7) it holds (7, 5)
    assert w == {"outline": 0.0, "inside": 0.75, "moves": [1, 2, 3],
                 "moved_along_edge": [0.75, 0.75, 0.375], "moved_diagonally": [0.75] * 3}
    small = cue.what_f_answers(TwoPixelF(), blank(4, size=12), cue.Cue(1, size=2))
    assert small["inside"] is None and small["moves"] == [1, 2, 3]     # a 2 x 2 cue: no inside
    near_edge = cue.what_f_answers(CornerF(), blank(4, size=8), cue.Cue(1, size=4))
    assert near_edge["moves"] == [1, 2]                    # 8 - 4 - 2 margins: 2 pixels of room


def test_moved_stamp_moves_toward_the_centre_from_every_corner():
    x = blank(1, size=10)
    for corner, (row, col) in {"bottom-right": (4, 5), "top-left": (3, 2)}.items():
        c = cue.Cue(0, size=3, corner=corner)
        out = cue.moved_stamp(x, c, 2, 1)[0, 0]
        want = torch.zeros(10, 10)
        want[row:row + 3, col:col + 3] = 1.0
        assert torch.equal(out, want), corner


# ==== Measures of a run's samples ================================================================
def with_patch(values, size=8):
    """Grey images, zero but for the 2 x 2 bottom-right cue region, set to each value."""
    x = blank(len(values), size=size)
    x[:, 0, 5:7, 5:7] = torch.tensor(values, dtype=torch.float32)[:, None, None]
    return x


def test_presence_counts_samples_closer_than_the_threshold_per_class():
    c = cue.Cue(0, size=2)                                 # white: distance = 1 - value
    x = with_patch([1.0, 0.0, 0.0, 0.0, 0.75, 0.5, 0.0, 0.0, 0.875, 0.875, 0.875, 0.25])
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    assert cue.cue_distance(x, c)[[0, 4, 8]].tolist() == [0.0, 0.25, 0.125]
    assert cue.presence(x, y, c, threshold=0.25) == [0.25, 0.0, 0.75]   # 0.25 itself: no
    assert cue.presence(x, y, c, threshold=0.25, n_classes=4)[3] is None


def test_cue_distance_averages_over_all_channels_of_the_region_only():
    c = cue.Cue(0, size=2, colour=(1.0, 0.0, 0.5))
    x = blank(1, channels=3, value=0.5)                    # distances 0.5, 0.5, 0 per channel
    assert abs(cue.cue_distance(x, c).item() - 1 / 3) < 1e-7
    x[:, :, 0:5] = 1.0                                     # outside the region: no change
    assert abs(cue.cue_distance(x, c).item() - 1 / 3) < 1e-7


def test_threshold_is_the_clean_quantile_capped_at_half_the_range():
    c = cue.Cue(0, size=2)
    clean = with_patch([i / 64 for i in range(65)])        # distances 0, 1/64, ..., 1
    t = cue.calibrate_threshold(clean, c, q=0.125)         # k = floor(0.125 * 64) = 8
    assert t == 8 / 64
    assert (cue.cue_distance(clean, c) < t).float().mean().item() <= 0.125
    assert cue.calibrate_threshold(with_patch([i / 8 for i in range(9)]), c, q=0.24) == 1 / 8
    assert cue.calibrate_threshold(with_patch([0.0] * 10), c) == 0.5      # capped: range 1
    grey = cue.Cue(0, size=2, colour=(0.25,))              # range mean(max(p, 1 - p)) = 0.75
    assert cue.calibrate_threshold(with_patch([1.0] * 10), grey) == 0.375


def test_anomaly_index_against_hand_medians():
    a = cue.anomaly_index([0.0, 0.0, 0.5, 0.1, 0.2])       # m 0.1, MAD 0.1
    assert a["index"][2] == pytest.approx(0.4 / (1.4826 * 0.1))
    assert a["index"][0] == pytest.approx(-0.1 / (1.4826 * 0.1)) and a["flagged"] == [2]
    b = cue.anomaly_index([0.1, 0.3, 0.2, 0.9])            # m 0.25, MAD (0.05 + 0.15) / 2
    assert b["index"][3] == pytest.approx(0.65 / (1.4826 * 0.1)) and b["flagged"] == [3]
    assert cue.anomaly_index([0.3] * 5) == {"index": [0.0] * 5, "flagged": []}
    flat = cue.anomaly_index([0.0, 0.0, 0.0, None, 0.05])  # MAD 0: floor 0.01
    assert flat["index"][4] == pytest.approx(0.05 / (1.4826 * 0.01)) and flat["index"][3] is None
    assert flat["flagged"] == [4]


class RegionF(nn.Module):
    """Class 2 when the mean of the bottom-right 2 x 2 region is above 0.5, else the class
    written in pixel (0, 0) as class / 4."""

    def forward(self, x):
        read = (x[:, 0, 0, 0] * 4).round().long().clamp(0, 2)
        hit = x[:, 0, 5:7, 5:7].mean((1, 2)) > 0.5
        return nn.functional.one_hot(torch.where(hit, 2, read), 3).float()


def test_beyond_chance_against_the_binomial_tail_by_hand():
    q = 0.01
    p2 = 1 - 0.99 ** 40 - 40 * q * 0.99 ** 39                        # P(2 or more of 40): 0.061
    p3 = p2 - math.comb(40, 2) * q ** 2 * 0.99 ** 38                  # P(3 or more of 40): 0.0075
    assert 0.06 < p2 < 0.062 and 0.0074 < p3 < 0.0076
    # four classes: alpha / 4 = 0.0125 lies between p3 and p2: two hits are chance, three not
    assert cue.beyond_chance([2 / 40, 3 / 40, 0.0, None], [40, 40, 40, 0], q) == [1]
    # ten classes: alpha / 10 = 0.005 < p3, so three hits of 40 are chance too; ten are not
    rates = [3 / 40, 10 / 40] + [0.0] * 8
    assert cue.beyond_chance(rates, [40] * 10, q) == [1]
    assert cue.beyond_chance(rates, [40] * 10, q, alpha=0.1) == [0, 1]    # 0.01 > p3


def test_function_pastes_the_per_pixel_median_patch():
    c = cue.Cue(2, size=2)
    others = blank(4)
    others[:, 0, 0, 0] = torch.tensor([0.0, 0.25, 0.5, 0.25])  # image 2 reads class 2 clean
    samples = with_patch([0.4, 0.5, 0.7, 1.0])             # median 0.6 (torch.median: 0.5)
    samples[:, 0, 0:5] = 1.0                               # outside the region: never pasted
    out = cue.function(RegionF(), samples, others, c)
    assert (out["recovered"], out["true_cue"], out["clean"]) == (1.0, 1.0, 0.25)
    for seed in range(6):                                  # bright and dull random patches
        noise = torch.rand(1, 2, 2, generator=torch.Generator().manual_seed(seed))
        random_patch = cue.function(RegionF(), samples, others, c, seed=seed)["random_patch"]
        assert random_patch == (1.0 if noise.mean() > 0.5 else 0.25)
    dull = cue.function(RegionF(), with_patch([0.5, 0.5, 0.5, 1.0]), others, c)   # median 0.5
    assert dull["recovered"] == 0.25
    per_pixel = with_patch([0.0, 0.0, 0.0])                # each sample's region mean: 0.5
    per_pixel[0, 0, 5, 5:7] = 1.0                          # pixels (5,5) (5,6) (6,5) (6,6):
    per_pixel[1, 0, 5:7, 5] = 1.0                          # 1 1 0 0 / 1 0 1 0 / 0 1 1 0;
    per_pixel[2, 0, 5, 6] = per_pixel[2, 0, 6, 5] = 1.0    # medians 1 1 1 0 (pixel means 2/3)
    assert cue.function(RegionF(), per_pixel, others, c)["recovered"] == 1.0


def test_a_recovered_trigger_is_pasted_through_its_mask():
    others = blank(4)
    others[:, 0, 0, 0] = torch.tensor([0.0, 0.25, 0.5, 0.25])  # image 2 reads class 2 clean
    others[:, 0, 5:7, 5:7] = 0.2                           # the region dull on every image
    samples = blank(3)
    samples[:, 0, 5:7, 5:7] = torch.tensor([0.9, 1.0, 0.3])[:, None, None]   # median 0.9
    half = torch.zeros(1, 8, 8)
    half[0, 5:7, 5:7] = 0.5                                # pasted: 0.5 * 0.2 + 0.5 * 0.9 = 0.55
    trigger = cue.recovered_trigger(samples, half)
    assert torch.equal(trigger[0], half) and trigger[1][0, 5, 5] == pytest.approx(0.9)
    assert cue.trigger_function(RegionF(), trigger, others, 2) == 1.0
    weak = half.clone()
    weak[0, 5:7, 5:7] = 0.25                               # 0.75 * 0.2 + 0.25 * 0.9 = 0.375
    assert cue.trigger_function(RegionF(), (weak, trigger[1]), others, 2) == 0.25  # image 2
    aside = torch.zeros(1, 8, 8)
    aside[0, 0:2, 5:7] = 1.0                               # a full mask elsewhere: no effect
    assert cue.trigger_function(RegionF(), (aside, trigger[1]), others, 2) == 0.25
    assert cue.recovered_trigger(blank(0), half) is None
    assert cue.trigger_function(RegionF(), None, others, 2) is None


def test_localisation_iou_weighs_each_other_class_the_same():
    c = cue.Cue(0, size=2)                                 # mask: rows 5-6, columns 5-6
    x = blank(5)
    y = torch.tensor([0, 1, 2, 2, 2])
    x[0, 0, 5, 5] = x[0, 0, 5, 6] = 1.0                    # diff 1, 1
    x[0, 0, 6, 5], x[0, 0, 6, 6] = 0.55, 0.52              # diff 0.55, 0.52
    x[0, 0, 0, 1] = 0.6                                    # diff 0.6, outside
    x[0, 0, 0, 0] = x[1, 0, 0, 0] = 1.0                    # others' mean 0.5 (pooled 0.25)
    loc = cue.localisation(x, y, c)                        # top 4: 3 in the mask
    assert (loc["in_mask"], loc["area"]) == (3, 4) and loc["iou"] == 3 / 5
    exact = blank(3)
    exact[0, 0, 5:7, 5:7] = 1.0
    assert cue.localisation(exact, torch.tensor([0, 1, 2]), c)["iou"] == 1.0


def test_localisation_sums_the_difference_over_channels():
    c = cue.Cue(0, size=1, corner="top-left")              # one pixel: (1, 1)
    x = blank(2, channels=3)
    x[0, :, 1, 1] = 0.4                                    # 3 channels x 0.4 = 1.2
    x[0, 0, 3, 3] = 1.0                                    # one channel x 1.0
    assert cue.localisation(x, torch.tensor([0, 1]), c)["iou"] == 1.0


def test_mask_scores_against_a_hand_count():
    c = cue.Cue(1, size=2)                                 # box: rows 5-6, columns 5-6 of 8
    m = blank(4)                                           # 4 classes' masks (4, 1, 8, 8)
    m[0, 0, 0:2, 0:4] = 1.0                                # area 8, none in the box
    m[1, 0, 5, 5:7] = 1.0                                  # area 2 + 0.5: 2 in the box;
    m[1, 0, 6, 5] = 0.4                                    # top 4: (5,5) (5,6) (6,5) and
    m[1, 0, 2, 2] = 0.1                                    # (2,2), 3 in the box
    m[2, 0, 0, 0:6] = 1.0                                  # area 6
    m[3, 0, 1, 0:7] = 1.0                                  # area 7
    out = cue.mask_scores(m, c)                            # areas 8, 2.5, 6, 7: median 6.5,
    assert out["area"] == pytest.approx([8.0, 2.5, 6.0, 7.0])   # |a - m| 1.5 4 .5 .5: MAD 1
    assert out["anomaly"]["index"] == pytest.approx([-1.5 / 1.4826, 4 / 1.4826,
                                                     0.5 / 1.4826, -0.5 / 1.4826])
    assert out["anomaly"]["flagged"] == [1]
    assert out["in_box"] == pytest.approx([0.0, 2.4 / 2.5, 0.0, 0.0])
    # near: the box grown by 2, clipped: rows 3-7, columns 3-7; class 0's (0-1, 0-3) is out,
    # class 1's all in but (2, 2), class 2's row 0 out, class 3's row 1 out
    assert out["near_box"] == pytest.approx([0.0, 2.4 / 2.5, 0.0, 0.0])
    m[3, 0, 4, 3] = 1.0                                    # one pixel just inside "near"
    m[3, 0, 4, 2] = 1.0                                    # one just outside
    assert cue.mask_scores(m, c)["near_box"][3] == pytest.approx(1 / 9)
    top_left = cue.mask_scores(m, cue.Cue(0, size=2, corner="top-left"))   # rows, columns 0-4
    assert top_left["near_box"][0] == 1.0                  # class 0's rows 0-1, columns 0-3
    assert out["iou"] == 3 / 5
    flat = cue.mask_scores(torch.ones(3, 1, 8, 8), cue.Cue(0, size=2))   # MAD 0: floor 0.5 px
    assert flat["anomaly"] == {"index": [0.0] * 3, "flagged": []} and flat["in_box"][0] == 4 / 64
    red = cue.mask_scores(m, cue.Cue(1, size=2, colour=(1, 0, 0)))        # an RGB cue
    assert red["iou"] == 3 / 5 and red["in_box"] == out["in_box"]
    with pytest.raises(common.UserError):                  # a 9 x 9 cue on 8 x 8 masks
        cue.mask_scores(m, cue.Cue(0, size=9))


def test_masks_of_reads_each_generators_mask_and_averages_them():
    bases = common.OtherClasses(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), 4)
    G = common.Generators([common.Generator(1, 8, 4, 8, 8, 8, bases=bases) for _ in range(2)])
    with torch.no_grad():
        G[0].mask_logits[1, 0, 3, 3] = 1.0                 # sigmoid(50): 1 in G_0, 0.5 in G_1
        G[1].mask_logits[2] = -1.0                         # sigmoid(-50): 0 in G_1
    m = common.masks_of(G.state_dict())
    assert m.shape == (4, 1, 8, 8) and m[1, 0, 3, 3] == pytest.approx(0.75)
    assert m[0].unique().tolist() == [0.5] and m[2, 0, 0, 0] == pytest.approx(0.25)
    assert common.masks_of(
        common.Generators([common.Generator(1, 8, 4, 8, 8, 8)]).state_dict()) is None


def test_score_is_json_ready_and_agrees_with_the_measures():
    c = cue.Cue(2, size=2)
    x_test = blank(6)
    x_test[:, 0, 0, 0] = torch.tensor([0, 0, 1, 1, 2, 2]) / 4
    y_test = torch.tensor([0, 0, 1, 1, 2, 2])
    samples = with_patch([0.0, 0.0, 0.25, 0.0, 1.0, 0.875])
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    s = cue.score(samples, y, RegionF(), {"x_test": x_test, "y_test": y_test}, c)
    json.dumps(s, allow_nan=False)
    assert s["threshold"] == 0.5 and s["cue"] == c.as_dict()               # clean corners: cap
    assert s["presence"] == [0.0, 0.0, 1.0] and s["presence_real"] == [0.0, 0.0, 0.0]
    assert s["anomaly"]["flagged"] == [2] and s["localisation"]["iou"] == 1.0
    assert s["beyond_chance"] == [2]           # 2 of 2 at q = 0.01: P = 1e-4 < 0.05 / 3
    assert s["function"]["recovered"] == 1.0 and s["function"]["clean"] == 0.0
    assert s["attack_success"]["others_called_target_stamped"] == 1.0
    lines = cue.summary_lines(s)
    assert all(isinstance(line, str) and len(line) <= 200 for line in lines)
    assert any("100.0%" in line and "presence" in line and "beyond chance [2]" in line
               for line in lines)
    assert not math.isnan(s["threshold"])
