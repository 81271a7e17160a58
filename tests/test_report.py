"""The matrix report: the loss plot's range, coinciding labels, empty columns, paired differences."""

import json

import pytest

from lib.study.report import COLUMNS, label_groups, loss_view, shown_columns


def test_the_loss_plot_is_scaled_to_the_trained_runs_not_the_untrained_start():
    curves = [
        [(0, 10.8), (100, 6.2), (200, 5.1), (300, 4.60)],
        [(0, 10.8), (100, 6.0), (200, 5.0), (300, 4.55)],
    ]
    low, high, start = loss_view(curves)
    assert start == 100 and high < 6.5 and low < 4.55  # 10.8 at step 0 lies above the axis
    assert loss_view([[(0, 10.8)]]) is None  # nothing trained yet: matplotlib's own range


def test_runs_on_the_same_spot_share_one_label():
    points = [
        (50.0, 120.0, "adamw_magnitude_50"),
        (50.0, 120.3, "adamwprune_bitter1_state_50"),
        (0.0, 90.0, "adamw_none"),
    ]
    groups = label_groups(points)
    assert sorted(names for _, _, names in groups) == [
        ["adamw_magnitude_50", "adamwprune_bitter1_state_50"],
        ["adamw_none"],
    ]


def test_the_summary_table_leaves_out_columns_no_run_has():
    cpu = {k: None for k, _ in COLUMNS} | {"run": "r", "status": "completed", "final_val_ppl": 300.0}
    keys = [k for k, _ in shown_columns([cpu])]
    assert keys == ["run", "status", "final_val_ppl"]
    gpu = cpu | {"mean_power_w": 300.0, "energy_wh": 1.0}
    assert {"mean_power_w", "energy_wh"} <= {k for k, _ in shown_columns([cpu, gpu])}


def test_paired_differences_cancel_the_seed_and_say_what_is_resolved():
    from lib.study.report import paired_differences

    def row(name, ppl):
        return {"run": name, "final_val_ppl": ppl}

    rows = [
        row("gpt2_a_s1", 40.0),
        row("gpt2_a_s2", 50.0),
        row("gpt2_a_s3", 45.0),  # seeds spread by 10
        row("gpt2_b_s1", 41.0),
        row("gpt2_b_s2", 51.1),
        row("gpt2_b_s3", 45.9),  # b is ~1 worse in each
        row("gpt2_c_s1", 39.0),
        row("gpt2_c_s2", 51.0),
        row("gpt2_c_s3", 45.0),  # c: no consistent sign
    ]
    b, c = sorted(paired_differences(rows, "gpt2_a"), key=lambda r: r["combination"])
    assert (b["diffs"], b["mean_diff"], b["verdict"]) == ("+1.00, +1.10, +0.90", "+1.00", "yes")
    lo, hi = (float(x) for x in b["ci95"].split(" to "))
    assert lo == pytest.approx(1.0 - 4.303 * 0.1 / 3**0.5, abs=0.01) and hi > 1.0
    assert c["verdict"] == "no"  # the mean of -1, +1, 0 does not exclude zero


def test_a_same_seed_repeat_pairs_with_its_seeds_run():
    """The repeat is named without _s<seed> (the matrix names a single-seed run so); its seed field pairs it."""
    from lib.study.report import paired_differences

    rows = [
        {"run": "gpt2_a_s1337", "final_val_ppl": 45.48, "seed": 1337},
        {"run": "gpt2_a_s1338", "final_val_ppl": 47.0, "seed": 1338},
        {"run": "gpt2_a_repeat", "final_val_ppl": 45.45, "seed": 1337},
    ]
    (repeat,) = paired_differences(rows, "gpt2_a")
    assert (repeat["combination"], repeat["seeds"], repeat["diffs"]) == ("gpt2_a_repeat", 1, "-0.03")
    assert repeat["verdict"] == "one seed"


def test_speed_groups_take_each_runs_median_interval_and_leave_out_compiling_ones(tmp_path):
    """A recompilation an older trainer did not flag (one interval at 300 ms) does not move the median."""
    from lib.study.report import speed_groups

    rows = []
    for name, seed, ms in (("gpt2_a", 1, 37.0), ("gpt2_a", 2, 37.2), ("gpt2_b", 1, 40.0)):
        run = tmp_path / f"{name}_s{seed}"
        run.mkdir()
        records = [{"kind": "train", "iter": 10, "ms_per_iter": 900.0, "includes_compile": True}]
        records += [{"kind": "train", "iter": 10 * i, "ms_per_iter": ms} for i in range(2, 9)]
        records[3]["ms_per_iter"] = 300.0  # a recompilation, unflagged
        records.append({"kind": "eval", "iter": 80, "val_loss": 3.0})
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        rows.append({"run": run.name, "dir": run, "final_val_ppl": 40.0, "ms_per_iter": 50.0})
    a, b = speed_groups(rows, "gpt2_a")
    assert (a["combination"], a["seeds"], a["median_range"]) == ("gpt2_a", 2, "37.00-37.20")
    assert a["median_ms"] == pytest.approx(37.1) and a["relative"] == "+0.0%"
    assert b["relative"] == f"{100 * (40.0 / 37.1 - 1):+.1f}%" and b["ms_per_iter"] == 50.0
    with pytest.raises(ValueError, match="reference"):
        speed_groups(rows, "gpt2_c")


def test_holm_rejects_in_order_of_p_and_stops_at_the_first_it_keeps():
    from lib.study.report import holm

    # m = 3: 0.01 <= 0.05/3 rejected; 0.03 > 0.05/2 kept, and so is everything after it
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]
    assert holm([0.001, 0.02, 0.04]) == [True, True, True]  # 0.02 <= 0.025, 0.04 <= 0.05
    assert holm([0.2, 0.001]) == [False, True]


def test_paired_differences_give_the_t_tests_p_and_holms_verdict():
    from lib.study.report import paired_differences

    rows = [{"run": f"ref_s{s}", "seed": s, "final_val_ppl": 40.0} for s in (1, 2, 3)]
    rows += [
        {"run": f"a_s{s}", "seed": s, "final_val_ppl": 40.0 + d}
        for s, d in zip((1, 2, 3), (1, 2, 3), strict=True)
    ]
    rows += [
        {"run": f"b_s{s}", "seed": s, "final_val_ppl": 40.0 + d}
        for s, d in zip((1, 2, 3), (9, 10, 11), strict=True)
    ]
    out = {r["combination"]: r for r in paired_differences(rows, "ref")}
    # a: diffs 1, 2, 3: t = 2 / (1 / sqrt 3) = 3.464 on 2 df, two-sided p = 0.0742 (by hand)
    assert (out["a"]["ci95"], out["a"]["p"], out["a"]["verdict"], out["a"]["holm"]) == (
        "-0.48 to +4.48",
        "0.074",
        "no",
        "no (of 2)",
    )
    assert out["b"]["p"] == "0.003" and out["b"]["holm"] == "yes (of 2)"  # t = 17.32: 0.0033 <= 0.05/2
