"""The four scripts are tutorials with their loops written out in each (as CleanRL does); the code
that is the same in all four on purpose, between "# [same in all four scripts: NAME]" and
"# [end]", is kept identical by this check (as Hugging Face's "Copied from" check does).  Also:
the same sections in the same order, and a script copied with common.py alone into an empty
folder still runs."""
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, SCRIPTS, TINY

REGION = re.compile(r"^# \[same in all four scripts: (.+?)\]\n(.*?)^# \[end\]$", re.M | re.S)
SECTIONS = re.compile(r"^# (\d)\. (\w+)", re.M)


def regions(text):
    """{name: code} of the marked regions of a script's text, in order."""
    return dict(REGION.findall(text))


def differences(texts):
    """The (script, region) pairs that differ from the first script's, or are missing."""
    names = list(texts)
    reference = regions(texts[names[0]])
    return [(name, region) for name in names[1:] for region in reference
            if regions(texts[name]).get(region) != reference[region]]


def read(name):
    return (ROOT / f"{name}.py").read_text()


def test_the_shared_regions_are_identical_in_all_four_scripts():
    texts = {name: read(name) for name in SCRIPTS}
    found = regions(texts[SCRIPTS[0]])
    # the loops and the step are among them: what a reader would otherwise have to diff by eye
    assert {"classifier", "inversion", "generator loop", "results", "main"} <= set(found)
    assert all(len(code.splitlines()) >= 3 for code in found.values())
    assert all(list(regions(t)) == list(found) for t in texts.values())
    assert differences(texts) == []


def test_the_check_catches_a_copy_that_drifted():
    texts = {name: read(name) for name in SCRIPTS}
    texts["svhn_inversion"] = texts["svhn_inversion"].replace("opt.zero_grad(set_to_none=True)",
                                                              "opt.zero_grad()", 1)
    assert differences(texts) == [("svhn_inversion", "classifier")]


def test_same_sections_in_the_same_order_and_no_framework_entry_point():
    orders = {name: SECTIONS.findall(read(name)) for name in SCRIPTS}
    assert [title for _, title in orders["fashion_inversion"]] == [
        "config", "data", "classifier", "generator", "inversion", "results", "main"]
    assert all(order == orders["fashion_inversion"] for order in orders.values())
    assert not any("sys.modules" in read(name) for name in SCRIPTS)


@pytest.mark.slow
def test_a_script_copied_with_common_alone_runs_and_skips_measurement(tmp_path):
    for name in ("cifar10_inversion.py", "common.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    result = subprocess.run([sys.executable, "cifar10_inversion.py", *TINY, "--out-dir", "out"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "measurement skipped" in result.stdout
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["classifier.pt", "generator.pt", "samples.png", "samples.pt"]
