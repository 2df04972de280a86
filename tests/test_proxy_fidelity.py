"""The statistics of ``benchmarks/proxy_fidelity.py`` on hand-made numbers (no training)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "proxy_fidelity.py"
_SPEC = importlib.util.spec_from_file_location("proxy_fidelity", _PATH)
pf = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pf)


def test_rank_stats_against_a_hand_computation():
    # full swaps a<->b and c<->d: sum d^2 = 4, rho = 1 - 6*4 / (5*24) = 0.8;
    # 2 discordant pairs of 10: tau = (8 - 2) / 10 = 0.6
    s = pf.rank_stats({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5},
                      {"a": 2, "b": 1, "c": 4, "d": 3, "e": 5})
    assert s["n"] == 5
    assert s["spearman"] == pytest.approx(0.8)
    assert s["kendall"] == pytest.approx(0.6)
    assert s["proxy_top3"] == ["e", "d", "c"]
    assert s["full_top1"] == "e" and s["top3_has_full_top1"]


def test_rank_stats_with_ties():
    # x ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4): rho = 4.5 / sqrt(4.5 * 5);
    # tau-b: 5 concordant pairs, one pair tied in x: 5 / sqrt((6 - 1) * 6)
    s = pf.rank_stats({"a": 1, "b": 1, "c": 2, "d": 3}, {"a": 1, "b": 2, "c": 3, "d": 4})
    assert s["spearman"] == pytest.approx(4.5 / math.sqrt(22.5))
    assert s["kendall"] == pytest.approx(5 / math.sqrt(30))


def test_top3_misses_the_full_best_and_reversed_order():
    s = pf.rank_stats({"a": 5, "b": 4, "c": 3, "d": 2, "e": 1},
                      {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    assert s["spearman"] == pytest.approx(-1.0) and s["kendall"] == pytest.approx(-1.0)
    assert s["proxy_top3"] == ["a", "b", "c"] and s["full_top1"] == "e"
    assert not s["top3_has_full_top1"]
    # only losses scored by both count; fewer than 3 is an error
    assert pf.rank_stats({"a": 1, "b": 2, "c": 3, "z": 9}, {"a": 1, "b": 2, "c": 3})["n"] == 3
    with pytest.raises(ValueError, match="at least 3"):
        pf.rank_stats({"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3})


def test_noise_helpers():
    assert pf.median_pair_gap([0.0, 1.0, 3.0]) == pytest.approx(2.0)  # gaps 1, 3, 2
    # t(0.975, 8) = 2.306: 2.306 / sqrt(8 + 2.306^2) = 0.632
    assert pf.spearman_critical(10) == pytest.approx(0.632, abs=1e-3)


def test_read_full_means_over_seeds():
    compare = {"runs": [
        {"loss": "ce", "seed": 0, "dir": "runs/ce/seed0", "metrics": {"miou": 0.5, "bf1": 0.6}},
        {"loss": "ce", "seed": 1, "dir": "runs/ce/seed1", "metrics": {"miou": 0.7, "bf1": None}},
        {"loss": "dice", "seed": 0, "dir": "runs/dice/seed0", "metrics": {"miou": 0.4, "bf1": 0.2}},
    ]}
    full = pf.read_full(compare, ["ce", "dice", "absent"])
    assert list(full) == ["ce", "dice"]
    assert full["ce"]["miou"] == pytest.approx(0.6) and full["ce"]["bf1"] == pytest.approx(0.6)
    assert full["ce"]["miou_per_seed"] == [0.5, 0.7] and full["ce"]["seeds"] == [0, 1]
    assert "miou_other" not in full["ce"]  # no run folders given: no val scores
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        pf.read_full(compare, ["ce"], split="val")


def _state(proxy: dict[str, list[float]], config: dict) -> dict:
    runs = {f"proxy-v/{loss}/seed{10 + i}": {"digest": pf._digest(config), "cpu": 20.0,
                                             "metrics": {"miou": x, "bf1": -x}}
            for loss, xs in proxy.items() for i, x in enumerate(xs)}
    return {"settings": {"losses": list(proxy), "variants": {"v": {}}, "configs": {"v": config},
                         "seeds": 2, "seed0": 10}, "runs": runs}


def test_summarize_and_the_top_level_summary():
    config = {"steps": 60}
    state = _state({"a": [0.1, 0.3], "b": [0.4, 0.4], "c": [0.6, 0.8], "d": [0.5, 0.5]}, config)
    state["runs"]["proxy-v/d/seed10"]["digest"] = "stale"  # other settings: left out
    full = {"losses": {loss: {"miou": m, "bf1": -m} for loss, m in
                       {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}.items()}}
    s = pf.summarize(state, full)["v"]
    rows = {r["loss"]: r for r in s["miou"]["rows"]}
    assert rows["a"]["proxy_mean"] == pytest.approx(0.2)
    assert rows["d"]["per_seed"] == [0.5]
    # proxy means a 0.2, b 0.4, c 0.7, d 0.5 vs full 0.1 .. 0.4: c and d swapped
    assert s["miou"]["spearman"] == pytest.approx(0.8)
    assert s["bf1"]["spearman"] == pytest.approx(0.8)  # both negated
    assert s["miou"]["proxy_top3"] == ["c", "d", "b"] and s["miou"]["top3_has_full_top1"]
    assert s["miou"]["cpu_per_trial"] == pytest.approx(20.0)
    top = pf.top_summary(pf.summarize(state, full))
    assert set(top) == {"v"} and set(top["v"]) == {"miou", "bf1"}
    assert set(top["v"]["miou"]) == {"spearman", "kendall"}
    assert top["v"]["miou"]["kendall"] == pytest.approx(4 / 6)
    # without full results: no correlations, the proxy side still summarised
    assert pf.top_summary(pf.summarize(state, None))["v"]["bf1"] == {"spearman": None,
                                                                      "kendall": None}


def test_default_variant_is_proxy_config():
    # ProxyConfig() is converged-lr0.03 up to the warm start's seed; previous-default is not
    settings = {"data": "shapes", "configs": {n: pf.proxy_config(n, "shapes") for n in
                                              ("converged", "previous-default",
                                               "converged-lr0.03")}}
    assert pf.default_variant(settings) == "converged-lr0.03"
    settings["configs"].pop("converged-lr0.03")
    assert pf.default_variant(settings) is None
