"""The tools in tools/ (plumbing beside the method): each on hand-made runs."""
import json

import pytest

import common
from conftest import load_tool


def test_compare_seeds_reports_means_spreads_and_refuses_mixed_splits(tmp_path, capsys):
    compare = load_tool("compare_seeds")

    def run(name, recall, split="test", dataset="MNIST"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(
            {"split": split, "dataset": dataset, "inversion": {"recall": recall,
                                                               "precision": 0.5}}))
        return str(tmp_path / name)
    a = ",".join(run(f"a{i}", r) for i, r in enumerate([0.10, 0.20, 0.30]))
    b = ",".join(run(f"b{i}", r) for i, r in enumerate([0.31, 0.40, 0.50]))
    c = ",".join(run(f"c{i}", r) for i, r in enumerate([0.30, 0.40, 0.50]))   # touches a's top
    compare.main([f"a={a}", f"b={b}", f"c={c}"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "split: test; seeds per recipe: a 3, b 3, c 3"
    recall = next(line for line in lines if line.startswith("| recall |"))
    assert recall == ("| recall | 0.200 (0.100-0.300) | 0.403 (0.310-0.500) | 0.400 (0.300-0.500)"
                      " | yes | no |")
    assert "| precision | 0.500 (0.500-0.500) |" in "\n".join(lines)
    assert not any(line.startswith("| Frechet") for line in lines)        # in no run: left out
    with pytest.raises(common.UserError, match="mix the test and the validation"):
        compare.main([f"a={a}", f"v={run('v0', 0.2, 'validation')}"])
    with pytest.raises(common.UserError, match="metrics.json not found"):
        compare.main([f"a={tmp_path / 'nowhere'}"])
    with pytest.raises(common.UserError, match="several datasets"):
        compare.main([f"a={a}", f"f={run('f0', 0.2, dataset='FashionMNIST')}"])
    with pytest.raises(common.UserError, match="empty run folder"):
        compare.main([f"a={a},"])
