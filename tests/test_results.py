"""docs/results.md: its tables are regenerated from the kept summaries, and the across-seeds rows."""

import json
import shutil
from pathlib import Path

import pytest

from lib.study.report import PLAN_FILE, collect, markdown_table, seed_groups
from lib.train.settings import upgrade_settings_dict
from scripts import results

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_published_tables_match_the_kept_summaries():
    assert results.main(["--check"]) == 0


def test_the_published_study_is_complete_and_reached_its_sparsities():
    folders = sorted(p.parent for p in (DOCS / "results").glob(f"*/{PLAN_FILE}"))
    assert [f.name for f in folders] == [
        "classify-linuxdoc-study",
        "like-for-like-adamw",
        "like-for-like-noclip",
        "like-for-like-repeat",
        "like-for-like-spam",
        "like-for-like-spam-1210",
        "like-for-like-theta5000",
        "like-for-like-theta5000-repeat",
        "linuxdoc-bitter2-control",
        "linuxdoc-pruning-study",
        "linuxdoc-sparsity-study",
    ]
    for folder in folders:
        for row in collect(folder):
            if folder.name == "like-for-like-theta5000-repeat" and not row["run"].endswith("_s1337"):
                assert row["status"] == "pending"  # the repeat ran its plan's seed 1337 only (--task 0)
                continue
            assert row["status"] == "completed", row["run"]
            if row["target_sparsity"]:
                assert abs(row["sparsity"] - row["target_sparsity"]) < 1e-3, row["run"]


LIKE_FOR_LIKE = ("spam", "adamw", "noclip", "theta5000", "repeat")


def test_the_like_for_like_runs_are_like_for_like():
    """31 runs: each on its base, one set of Adam settings, one schedule, 3+ SPAM resets where SPAM
    steps, and each ablation differing from the SPAM family's magnitude runs in its one setting."""
    runs = {}
    for family in LIKE_FOR_LIKE:
        for run in sorted((DOCS / "results" / f"like-for-like-{family}").glob("gpt2_*")):
            summary = json.loads((run / "summary.json").read_text())
            settings = json.loads((run / "settings.json").read_text())
            runs[run.name] = (family, summary, settings)
    assert len(runs) == 15 + 9 + 3 + 3 + 1
    reference = runs["gpt2_adamwspam_magnitude_50_s1337"][2]
    for name, (family, summary, settings) in runs.items():
        opt, training, pruning = settings["optimizer"], settings["training"], settings["pruning"]
        assert summary["status"] == "completed", name
        assert (opt["beta1"], opt["beta2"], opt["weight_decay"]) == (0.9, 0.95, 0.1), name
        assert training["max_iters"] == (1210 if "bitter2" in name else 1000), name
        assert (pruning["warmup_steps"], pruning["frequency"]) == (100, 50), name
        spam_steps = summary["optimizer"] == "adamwspam" or summary.get("adamwprune_base") == "adamwspam"
        assert spam_steps == (family != "adamw"), name
        if summary["optimizer"] == "adamwprune":
            expected = "adamwspam" if family == "spam" else "adamw"
            assert summary["adamwprune_base"] == expected and ("-spam" in name) == (family == "spam"), name
        if spam_steps:
            resets = (summary["iters"] - 1) // opt["spam_interval"]
            assert opt["spam_periodic_reset"] and resets >= 3, name
        if family in ("noclip", "theta5000", "repeat"):
            # AdamWPrune's own settings do not apply to an AdamWSPAM run
            changed = {
                k for k in opt if opt[k] != reference["optimizer"][k] and not k.startswith("adamwprune")
            }
            assert changed == {"noclip": {"spam_clip"}, "theta5000": {"spam_theta"}, "repeat": set()}[family]
            assert settings["pruning"] == reference["pruning"], name
    assert runs["gpt2_adamwspam_magnitude_50_theta5000_s1337"][2]["optimizer"]["spam_theta"] == 5000
    assert runs["gpt2_adamwspam_magnitude_50_repeat"][1]["seed"] == 1337


def test_the_2026_12_04_runs_differ_from_the_kept_ones_in_what_they_are_for():
    """bitter2's control: AdamWSPAM + magnitude with bitter2's steps, else the SPAM family's settings;
    the theta 5000 repeat: the kept theta 5000 seed 1337's settings exactly; both log the clip count."""

    def settings(folder: str, run: str) -> dict:
        return json.loads((DOCS / "results" / folder / run / "settings.json").read_text())

    reference = settings("like-for-like-spam", "gpt2_adamwspam_magnitude_50_s1337")
    bitter2 = settings("like-for-like-spam", "gpt2_adamwprune-spam_bitter2_state_50_s1337")
    for seed in (1337, 1338, 1339):
        control = settings("like-for-like-spam-1210", f"gpt2_adamwspam_magnitude_50_1210_s{seed}")
        assert control["training"] == {**reference["training"], "max_iters": bitter2["training"]["max_iters"]}
        differs = {
            k for k in control["optimizer"] if control["optimizer"][k] != reference["optimizer"].get(k)
        }
        assert differs <= {"adamwprune_base"}  # AdamWPrune's own setting does not apply to AdamWSPAM
        assert control["pruning"]["method"] == reference["pruning"]["method"] == "magnitude"
        for key in ("target_sparsity", "warmup_steps", "frequency", "ramp_end_step", "ramp"):
            assert control["pruning"][key] == reference["pruning"][key], key
        assert control["runtime"]["seed"] == seed
    run = "gpt2_adamwspam_magnitude_50_theta5000_s1337"
    # the kept record predates the move of AdamWPrune's fields to pruning (MOVED_FIELDS)
    again = upgrade_settings_dict(settings("like-for-like-theta5000-repeat", run))
    kept = upgrade_settings_dict(settings("like-for-like-theta5000", run))
    for section in ("model", "data", "training", "optimizer", "pruning", "runtime"):
        assert again[section] == kept[section], section
    metrics = (DOCS / "results" / "like-for-like-theta5000-repeat" / run / "metrics.jsonl").read_text()
    assert '"spam_clipped": ' in metrics


def test_a_table_edited_by_hand_is_caught_and_regenerated(tmp_path, capsys):
    root = tmp_path / "results"
    shutil.copytree(DOCS / "results", root)
    doc = tmp_path / "results.md"
    original = (DOCS / "results.md").read_text()
    doc.write_text(original.replace("| 36.52 |", "| 34.52 |", 1))
    assert doc.read_text() != original
    assert results.main(["--check", "--doc", str(doc), "--results", str(root)]) == 1
    assert "differ" in capsys.readouterr().out
    assert results.main(["--doc", str(doc), "--results", str(root)]) == 0
    assert doc.read_text() == original
    assert (root / "linuxdoc-pruning-study" / "summary.md").is_file()
    assert (root / "linuxdoc-pruning-study" / "seeds.png").is_file()  # two seeds: the across-seeds plot


def test_a_document_without_tables_or_with_an_unknown_folder_is_refused(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# nothing here\n")
    assert results.main(["--check", "--doc", str(doc)]) == 2
    doc.write_text("<!-- results: missing runs -->\n<!-- /results -->\n")
    with pytest.raises(SystemExit, match="not a test matrix results folder"):
        results.main(["--check", "--doc", str(doc), "--results", str(tmp_path)])


def _row(run, ppl, ms, sparsity=0.5):
    keys = ("final_val_loss", "iters", "tokens_per_sec", "peak_memory_gib", "state_per_weight")
    return {"run": run, "final_val_ppl": ppl, "ms_per_iter": ms, "sparsity": sparsity} | dict.fromkeys(keys)


def test_seed_groups_average_each_combination_and_rank_by_mean_perplexity():
    rows = [
        _row("gpt2_adamw_magnitude_50_s1337", 40.0, 10.0),
        _row("gpt2_adamw_magnitude_50_s1338", 44.0, 12.0),
        _row("gpt2_adamw_none", 41.0, 9.0, None),
        {**_row("gpt2_adamw_movement_50_s1337", None, None), "final_val_ppl": None},  # failed: left out
    ]
    groups = seed_groups(rows)
    assert [g["combination"] for g in groups] == ["gpt2_adamw_none", "gpt2_adamw_magnitude_50"]
    mag = groups[1]
    assert mag["seeds"] == 2 and mag["final_val_ppl"] == 42.0 and mag["ms_per_iter"] == 11.0
    assert mag["ppl_range"] == "40.00-44.00" and mag["sparsity"] == 0.5
    assert groups[0]["sparsity"] is None
    table = markdown_table(groups, [("combination", "c"), ("final_val_ppl", "ppl")], bold="gpt2_adamw_none")
    assert (
        table[2] == "| **gpt2_adamw_none** (best) | 41.00 |"
        and table[3] == "| gpt2_adamw_magnitude_50 | 42.00 |"
    )
    json.dumps(groups)  # goes into summary.json as it is
