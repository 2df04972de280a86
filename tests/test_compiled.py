"""Compiled surrogates (autoloss.losses.compiled): golden parity and gradient agreement through
the compiled path, one graph for every curve of a kind, the fallback, the options, and a search
that compiles once per worker.

Marked ``compiled``: the default run (and CI) runs them; on a cold inductor cache they take
about two minutes (each graph compiles once and is shared by the tests: same key, same
graph). Deselect with ``-m "not compiled"``. The whole golden matrix through the compiled path
(both files, every case, float32 and float64) is marked ``slow`` as well."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from autoloss.core.relaxations import curve_from_raw
from autoloss.losses import SurrogateLoss, load_loss
from autoloss.losses import compiled as compiled_module
from autoloss.losses.compiled import (
    CompileFallbackWarning,
    compile_losses,
    compile_report,
    compiler_problem,
)

pytestmark = pytest.mark.compiled

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
IGNORE_FILE = GOLDEN / "asl_surrogate_B2_C5_H20_W20_ign255.npz"
ALL_FILES = sorted(GOLDEN.glob("asl_surrogate_*.npz")) if GOLDEN.is_dir() else []
ALL_CASES = ["miou", "fwiou", "macc", "gacc", "biou", "biou_tol2", "biou_tol0", "bf1", "bf1_tol2",
             "bf1_dropbg"]
# one case per graph family (region, accuracy, boundary band, boundary F1) on the file with an
# ignore label; fwiou and gacc share the miou and macc graphs
CI_CASES = ["miou", "fwiou", "macc", "gacc", "biou", "bf1"]
METRIC_OF = {"mIoU": "miou", "FWIoU": "fwiou", "mAcc": "macc", "gAcc": "gacc", "BIoU": "biou",
             "BF1": "bf1"}


@pytest.fixture(scope="module", autouse=True)
def compiling():
    """Compilation on (the suite runs eager, tests/conftest.py), or the module skipped with the
    reason when this machine cannot compile."""
    problem = compiler_problem()
    if problem is not None:
        pytest.skip(problem)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AUTOLOSS_COMPILE", raising=False)
        yield


def compiles() -> int:
    return sum(r["ready"] for r in compile_report())


def golden_case(path: Path, case: str, dtype: torch.dtype):
    if not path.is_file():
        pytest.skip(f"golden file {path} not found")
    data = np.load(path)
    cfg = json.loads(str(data[f"cfg_{case}"]))
    ignore = int(data["ignore_index"])
    options = {"ignore_index": None if ignore < 0 else ignore, "tol": cfg["tol"],
               "drop_bg": cfg["drop_bg"]}
    logits = torch.tensor(data["logits"], dtype=dtype)
    return (f"asl-voc-{METRIC_OF[cfg['target_metric']]}", options, logits,
            torch.tensor(data["labels"]), float(data[f"loss_{case}"]), data[f"grad_{case}"])


def run(loss, logits: torch.Tensor, labels: torch.Tensor):
    x = logits.detach().clone().requires_grad_(True)
    value = loss(x, labels)
    value.backward()
    return value.detach(), x.grad


def check_golden(path: Path, case: str, dtype: torch.dtype) -> None:
    """The golden tests of test_surrogate.py, at their tolerances, through the compiled path."""
    preset, options, logits, labels, ref_loss, ref_grad = golden_case(path, case, dtype)
    before = compile_report()
    value, grad = run(load_loss(preset, compile=True, **options), logits, labels)
    after = compile_report()
    assert len(after) >= len(before) and all(r["ready"] for r in after)  # it ran compiled
    assert any(r["calls"] > b["calls"] for r, b in zip(after, before)) or len(after) > len(before)
    if dtype == torch.float32:
        assert float(value) == pytest.approx(ref_loss, rel=1e-5)
    elif preset.endswith("bf1"):
        assert abs(float(value) - ref_loss) <= 1e-7
        np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=0, atol=1e-9)
    else:
        assert float(value) == pytest.approx(ref_loss, rel=1e-12, abs=0)
        np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=0, atol=1e-15)


@pytest.mark.parametrize("case", CI_CASES)
def test_golden_parity_through_the_compiled_path(case: str) -> None:
    check_golden(IGNORE_FILE, case, torch.float64)


@pytest.mark.parametrize("case", ["miou", "fwiou"])
def test_golden_float32_through_the_compiled_path(case: str) -> None:
    check_golden(IGNORE_FILE, case, torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", ALL_CASES)
@pytest.mark.parametrize("path", ALL_FILES, ids=[p.stem for p in ALL_FILES])
def test_golden_matrix_through_the_compiled_path(path: Path, case: str, dtype: torch.dtype) -> None:
    check_golden(path, case, dtype)


def random_curves(metric: str, gen: torch.Generator) -> dict:
    names = SurrogateLoss(metric).program.curves
    pieces = 1 if metric == "bf1" else 2
    return {n: curve_from_raw("bezier", torch.rand(4 * pieces - 2, generator=gen).tolist(),
                              pieces=pieces) for n in names}


@pytest.mark.parametrize(("metric", "options"), [
    ("miou", {"classes": "all"}), ("macc", {"classes": "all"}),
    ("biou", {"classes": "all", "drop_bg": True}), ("bf1", {"float32_dilation": True}),
])
def test_random_curves_share_one_graph_and_gradients_agree(metric: str, options: dict) -> None:
    """Random logits and curves, the shapes and options of the golden graphs above: several
    losses with other curve parameters compile nothing new (dynamo's graph count included),
    and loss and gradients agree with the eager kernel (float64: 1e-12 / 1e-6 relative)."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (2, 20, 20), generator=gen)
    labels[torch.rand(2, 20, 20, generator=gen) < 0.1] = 255
    kw = {"ignore_index": 255, "tol": 5, **options}
    first = SurrogateLoss(metric, curves=random_curves(metric, gen), compile=True, **kw)
    run(first, torch.randn(2, 5, 20, 20, dtype=torch.float64, generator=gen), labels)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    count = compiles()
    for _ in range(3):
        curves = random_curves(metric, gen)
        logits = torch.randn(2, 5, 20, 20, dtype=torch.float64, generator=gen) * 3
        value, grad = run(SurrogateLoss(metric, curves=curves, compile=True, **kw), logits, labels)
        ref_value, ref_grad = run(SurrogateLoss(metric, curves=curves, compile=False, **kw),
                                  logits, labels)
        assert float(value) == pytest.approx(float(ref_value), rel=1e-12, abs=1e-15)
        scale = float(ref_grad.abs().max())
        torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-9 * scale)
    assert compiles() == count
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_float32_gradients_agree_with_eager() -> None:
    gen = torch.Generator().manual_seed(1)
    preset, options, logits, labels, _, _ = golden_case(IGNORE_FILE, "miou", torch.float32)
    logits = torch.randn(logits.shape, generator=gen)
    value, grad = run(load_loss(preset, compile=True, **options), logits, labels)
    ref_value, ref_grad = run(load_loss(preset, compile=False, **options), logits, labels)
    assert float(value) == pytest.approx(float(ref_value), rel=1e-6)
    assert float((grad - ref_grad).norm() / ref_grad.norm()) <= 1e-6


def test_edge_cases_through_the_compiled_path() -> None:
    """All-ignored batch (0, zero gradient), soft labels, binary mode, and inputs without grad
    (evaluation: the eager kernel, same value)."""
    gen = torch.Generator().manual_seed(2)
    preset, options, logits, labels, _, _ = golden_case(IGNORE_FILE, "miou", torch.float64)
    loss = load_loss(preset, compile=True, **options)
    value, grad = run(loss, logits, torch.full_like(labels, 255))
    assert float(value) == 0.0 and float(grad.abs().max()) == 0.0
    count = compiles()
    with_grad = float(run(loss, logits, labels)[0])
    with torch.no_grad():
        assert float(loss(logits, labels)) == pytest.approx(with_grad, rel=1e-12)
    assert compiles() == count  # the graph of the golden miou test; evaluation runs eagerly
    soft = torch.softmax(3 * torch.randn(2, 5, 20, 20, dtype=torch.float64, generator=gen), 1)
    for target in (soft, labels.clamp_max(1)):
        kw = {} if target.is_floating_point() else {"mode": "binary", "ignore_index": None}
        x = logits if target.is_floating_point() else logits[:, :1]
        got = run(SurrogateLoss("miou", compile=True, **kw), x, target)
        want = run(SurrogateLoss("miou", compile=False, **kw), x, target)
        assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-12)
        torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-15)
    assert compiles() == count + 2  # one graph each for soft labels and binary mode


def test_a_failed_compilation_falls_back_with_one_warning(monkeypatch) -> None:
    def broken(key):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(compiled_module, "_compile", broken)
    monkeypatch.setattr(compiled_module, "_GRAPHS", compiled_module._GraphCache())
    logits = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    labels = torch.randint(0, 3, (1, 6, 6))
    with pytest.warns(CompileFallbackWarning, match="no compiler here"):
        value, grad = run(SurrogateLoss("miou", compile=True), logits, labels)
    ref_value, ref_grad = run(SurrogateLoss("miou", compile=False), logits, labels)
    assert float(value) == float(ref_value) and torch.equal(grad, ref_grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(SurrogateLoss("macc", compile=True), logits, labels)  # no second warning


def test_options_environment_and_auto(monkeypatch) -> None:
    """``compile`` validated and left out of the loss file; AUTOLOSS_COMPILE=0 wins over
    compile=True; "auto" compiles once eager forwards took AUTO_AFTER seconds, at once inside
    compile_losses."""
    with pytest.raises(ValueError, match="compile must be True, False or 'auto'"):
        SurrogateLoss("miou", compile="yes")
    assert "compile" not in SurrogateLoss("miou", compile=True).to_dict()
    assert load_loss("asl-voc-miou", compile=False).compile_option is False
    monkeypatch.setattr(compiled_module, "_GRAPHS", compiled_module._GraphCache())
    monkeypatch.setattr(compiled_module, "_compile", lambda key: (lambda *a: None))
    logits = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    labels = torch.randint(0, 3, (1, 6, 6))
    key = compiled_module.graph_key(
        SurrogateLoss("miou").program, SurrogateLoss("miou").curves, logits.requires_grad_(),
        labels, mode="hard", tol=5, drop_bg=False, eps=1e-8, float32_dilation=False)
    monkeypatch.setenv("AUTOLOSS_COMPILE", "0")
    assert not compiled_module.wants_compile(True, key)
    monkeypatch.setenv("AUTOLOSS_COMPILE", "maybe")
    with pytest.raises(ValueError, match="AUTOLOSS_COMPILE must be one of"):
        compiled_module.wants_compile(True, key)
    monkeypatch.delenv("AUTOLOSS_COMPILE")
    monkeypatch.setattr(compiled_module, "AUTO_AFTER", 1.0)
    decisions = []
    for _ in range(3):
        decisions.append(compiled_module.wants_compile("auto", key))
        compiled_module.note_eager(key, 0.6)  # what surrogate_loss reports after an eager call
    assert decisions == [False, False, True]
    other = compiled_module.GraphKey(**{**key.__dict__, "tol": 3})
    with compile_losses(True):
        assert compiled_module.wants_compile("auto", other)
        assert not compiled_module.wants_compile(False, other)
    with compile_losses(False):
        assert not compiled_module.wants_compile("auto", other)
    assert compiled_module.graph_key(
        SurrogateLoss("miou").program, SurrogateLoss("miou").curves, logits.detach(), labels,
        mode="hard", tol=5, drop_bg=False, eps=1e-8, float32_dilation=False) is None  # no grad


def test_a_search_compiles_once_per_worker(tmp_path: Path) -> None:
    """Two spawned workers, real proxy on the embedded shapes data: every surrogate run of a
    worker (references and trials, other curves each) uses the one graph that worker compiled."""
    from autoloss.search.config import SearchConfig
    from autoloss.search.run import run_search

    proxy = {"width": 4, "depth": 2, "steps": 3, "batch_size": 2, "eval_every": 3,
             "warm_start_steps": 2, "metrics": ["miou"], "num_threads": 1, "device": "cpu",
             "compile_loss": True}
    config = SearchConfig(metric="miou", data="shapes?n=16&size=24", trials=5, workers=2,
                          out=tmp_path / "run", cache=tmp_path / "cache", proxy=proxy,
                          proxy_factory="probe_proxy:build", rescore_top=0, plots=False,
                          pruner=False, sampler="random")
    result = run_search(config, progress=False)
    assert result.counts["complete"] == 5
    log = (tmp_path / "cache" / "compiles.log").read_text().splitlines()
    runs, compiled = Counter(), Counter()
    for pid, during, _ in (line.split() for line in log):
        runs[pid] += 1
        compiled[pid] += int(during)
    assert sum(runs.values()) >= 6 and max(runs.values()) >= 3  # CE baseline + 5 trials
    assert all(n <= 1 for n in compiled.values()), compiled
    assert sum(compiled.values()) >= 1
    completed = [line.split() for line in log if line.split()[2] != "None"]
    assert sum(int(c) for _, d, c in completed) == sum(int(d) for _, d, c in completed)


def test_a_graph_another_process_compiles_runs_eagerly_meanwhile(tmp_path, monkeypatch) -> None:
    """While another process holds a graph's compile lock, calls run the eager kernel (nothing
    compiled, no warning); once it is released, this process compiles (from the cache the
    other one filled)."""
    import fcntl

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(compiled_module, "_GRAPHS", compiled_module._GraphCache())
    logits = torch.randn(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (1, 6, 6))
    loss = SurrogateLoss("miou", compile=True)
    key = compiled_module.graph_key(loss.program, loss.curves, logits, labels, mode="hard", tol=5,
                                    drop_bg=False, eps=1e-8, float32_dilation=False)
    lock = tmp_path / "autoloss-locks" / f"{key.name()}.lock"
    lock.parent.mkdir()
    with open(lock, "a+") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert compiled_module.compiled_stats(key, logits, labels, ignore_index=None,
                                                  curves=loss.curves) is None
        assert compile_report() == []
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    with compiled_module._compile_turn(key) as turn:
        assert turn
