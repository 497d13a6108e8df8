"""Whose each setting is: the paper's, an open choice of ours, or beyond the paper, said the same
way in --help, in SETTINGS and in the log; and the priors that read the training images (not
only f) named so, with --data-free turning them off."""
import re

import pytest

import common
from conftest import ROOT, SCRIPTS, TINY, load_script

HEADERS = {"what the paper leaves open": "open", "beyond the paper": "beyond",
           "running and measuring": "running"}


def help_groups(script):
    """{flag dest: group name} as --help shows them (group titles from common.GROUPS)."""
    titles = {title: name for name, (title, _) in common.GROUPS.items()}
    ap = script_parser(script)
    return {action.dest: titles[group.title] for group in ap._action_groups
            if group.title in titles for action in group._group_actions}


def script_parser(script):
    """The script's parser, caught as parse_args builds it."""
    caught = []
    real = common.argument_parser

    def catching(doc):
        caught.append(real(doc))
        return caught[-1]
    common.argument_parser = catching
    try:
        script.parse_args([])
    finally:
        common.argument_parser = real
    return caught[0]


def settings_blocks(name):
    """{SETTINGS key: the block it is written under} from the script's text."""
    text = (ROOT / f"{name}.py").read_text()
    body = re.search(r"^SETTINGS = \{\n(.*?)^\}", text, re.M | re.S).group(1)
    blocks, block = {}, None
    for line in body.splitlines():
        if header := re.match(r"\s*# -- (.+?) -", line):
            block = next(v for k, v in HEADERS.items() if header.group(1).startswith(k))
        elif key := re.match(r'\s*"(\w+)":', line):
            blocks[key.group(1)] = block
    return blocks


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_settings_and_common_agree_on_whose_each_setting_is(name):
    groups = help_groups(load_script(name))
    for whose, keys in common.WHOSE.items():
        assert {k for k, g in groups.items() if g == whose} == set(keys), whose
    for key, block in settings_blocks(name).items():
        assert block == groups[key], (key, block, groups[key])
    # the paper's values are what --paper restores, and nothing beyond the paper escapes it
    presets = {"data_free", "audit"}                             # switches, not weights
    beyond_with_a_weight = set(common.WHOSE["beyond"]) - presets - {"classifier_adv_eps",
                                                                    "mode_seeking_on"}
    assert beyond_with_a_weight <= set(common.PAPER)


def test_help_marks_each_prior_that_reads_the_training_images(capsys):
    with pytest.raises(SystemExit):
        load_script("svhn_inversion").parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for key in common.READS_TRAINING_IMAGES:
        flag = "--" + key.replace("_", "-")
        assert re.search(re.escape(flag) + r" \S+ \[data\]", text), flag
    marked = re.findall(r"(--[\w-]+) [A-Z_]+ \[data\]", text)
    assert sorted(marked) == sorted("--" + k.replace("_", "-")
                                    for k in common.READS_TRAINING_IMAGES)


@pytest.mark.parametrize("length", [[], ["--medium"], ["--quick"]])
def test_data_free_turns_off_every_prior_that_reads_the_training_images(length):
    for name in SCRIPTS:
        args = load_script(name).parse_args(length + ["--data-free"])
        assert all(getattr(args, k) == 0 for k in common.READS_TRAINING_IMAGES), name
        plain = load_script(name).parse_args(length)
        others = set(vars(plain)) - set(common.READS_TRAINING_IMAGES) - {"data_free"}
        assert {k: getattr(args, k) for k in others} == {k: getattr(plain, k) for k in others}


def test_the_log_says_whose_each_setting_is_and_what_g_reads(capsys):
    mod = load_script("cifar10_inversion")
    common.print_settings(mod.parse_args([]))
    out = capsys.readouterr().out
    for group in common.GROUPS:
        assert f"settings ({group}):" in out
    beyond = out[out.index("settings (beyond)"):out.index("settings (running)")]
    assert "stats=3.0 [data]" in beyond and "bn_stats=1.0 " in beyond
    assert "G learns from f and the training images (--stats, --generator-stats)" in out
    common.print_settings(mod.parse_args(["--data-free"]))
    assert "G learns from f alone: data-free" in capsys.readouterr().out


def test_a_data_free_run_never_reads_the_training_images_for_g(tmp_path, monkeypatch, capsys):
    mod = load_script("svhn_inversion")
    args = TINY
    mod.main(args + ["--out-dir", str(tmp_path / "with")])       # the defaults read them
    assert "G learns from f and the training images" in capsys.readouterr().out

    def refuse(*a, **k):
        raise AssertionError("the training images' statistics were computed")
    monkeypatch.setattr(common, "feature_statistics", refuse)
    with pytest.raises(AssertionError, match="statistics were computed"):
        mod.main(args + ["--out-dir", str(tmp_path / "again")])
    mod.main(args + ["--data-free", "--out-dir", str(tmp_path / "free")])
    assert (tmp_path / "free" / "samples.pt").is_file()
