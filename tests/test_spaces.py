"""Search spaces: every shipped file, the raw -> curve constraints, reference points, composite
spaces and every malformed-file error."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from autoloss.core.programs import BUILTIN_PROGRAMS
from autoloss.losses import CombinedLoss, SurrogateLoss
from autoloss.losses.check import check_loss
from autoloss.losses.presets import PRESETS
from autoloss.search.space_types import CeWeight, CompositeSpace, CurveSpace, bezier_raw_from_points
from autoloss.search.spaces import default_space, load_space, parse_space

REPO = Path(__file__).resolve().parents[1]
SPACE_FILES = sorted((REPO / "autoloss" / "search_spaces").glob("*.yaml"))
GOLDEN = REPO.parent / "shared" / "golden" / "asl_bezier_curves.npz"
X = torch.linspace(0, 1, 2001, dtype=torch.float64)


def test_one_file_per_builtin_metric():
    assert {p.stem for p in SPACE_FILES} == set(BUILTIN_PROGRAMS)


# The paper's published settings (fundamentalvision/Auto-Seg-Loss, ASL_configs/retrain/*_bezier_10k.py:
# BIoU drop_bg=True, tol 5; BF1 drop_bg=False, tol 5): the shipped files must keep them.
PAPER_OPTIONS = {"biou": {"classes": "present", "tol": 5, "drop_bg": True},
                 "bf1": {"classes": "present", "tol": 5, "drop_bg": False}}
PAPER_REFERENCES = {"miou": "asl-voc-miou", "fwiou": "asl-voc-fwiou", "mdice": "asl-voc-miou",
                    "miou_image": "asl-voc-miou", "macc": "asl-voc-macc", "gacc": "asl-voc-gacc",
                    "biou": "asl-voc-biou", "bf1": "asl-voc-bf1"}


@pytest.mark.parametrize("path", SPACE_FILES, ids=lambda p: p.stem)
def test_space_files_are_the_builtin_spaces_with_the_paper_settings(path, tmp_path, monkeypatch):
    space = load_space(path)
    assert space.metric == path.stem and space.source == str(path)
    assert tuple(space.curves) == BUILTIN_PROGRAMS[path.stem].curves
    assert default_space(path.stem) == space  # the built-in space is the shipped file
    assert space.options == PAPER_OPTIONS.get(path.stem, {"classes": "present"})
    assert space.reference == PAPER_REFERENCES[path.stem]
    assert space.ce_weight == CeWeight()  # no cross-entropy term
    pieces = 1 if path.stem == "bf1" else 2
    assert {(c.kind, c.pieces, c.low, c.high) for c in space.curves.values()} == {
        ("bezier", pieces, 0.0, 1.0)}
    assert list(space.initial_points) == ["paper_mu"]  # the paper's mu: the identity
    names = space.param_names()
    assert len(names) == len(set(names)) == sum(cs.size for cs in space.curves.values())
    monkeypatch.chdir(tmp_path)  # from any folder: by metric name, the shipped file
    assert load_space(path.stem) == space


def test_a_local_search_spaces_file_is_not_read(tmp_path, monkeypatch):
    """A metric name means the shipped space wherever the search starts (issue 27): a
    ``search_spaces/<metric>.yaml`` of the working folder gets one warning line and is not read;
    named by path, it is the space."""
    (tmp_path / "search_spaces").mkdir()
    text = (SPACE_FILES[0].read_text()).replace("high: 1.0", "high: 0.9")
    (tmp_path / "search_spaces" / SPACE_FILES[0].name).write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"the built-in search space is used, not "
                      r"'search_spaces/.*' of the working folder") as caught:
        space = load_space(SPACE_FILES[0].stem)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert space == default_space(SPACE_FILES[0].stem) and space.source == str(SPACE_FILES[0])
    local = load_space(Path("search_spaces") / SPACE_FILES[0].name)
    assert local.source == str(Path("search_spaces") / SPACE_FILES[0].name)
    assert {c.high for c in local.curves.values()} == {0.9}


def test_the_project_spaces_are_named_by_path_and_read():
    """The project's own spaces (top-level ``search_spaces/``) parse, and every ``space:`` of an
    experiment file names an existing file by path from the repository root."""
    files = sorted((REPO / "search_spaces").glob("*.yaml"))
    assert files, "no project search space"
    for path in files:
        assert path.stem not in BUILTIN_PROGRAMS  # a metric name never reads these
        load_space(path)
    named = [line.split("space:", 1)[1].split("#")[0].strip()
             for p in sorted((REPO / "experiments").glob("*.yaml"))
             for line in p.read_text().splitlines() if line.strip().startswith("space:")]
    assert named and all((REPO / n).is_file() and n.startswith("search_spaces/") for n in named)


def test_a_missing_builtin_file_is_a_clear_error(tmp_path, monkeypatch):
    import autoloss.search.spaces as spaces_mod

    monkeypatch.setattr(spaces_mod, "SPACES_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="install is incomplete; reinstall"):
        default_space("miou")


def test_parameter_counts_follow_the_paper():
    assert load_space("miou").param_names()[:7] == [
        "inter.0", "inter.1", "inter.2", "inter.3", "inter.4", "inter.5", "union.0"]
    assert len(load_space("miou").param_names()) == 12
    assert len(load_space("macc").param_names()) == 6
    assert len(load_space("bf1").param_names()) == 8


def is_valid_curve(curve) -> None:
    y = curve(X)
    assert float(curve(torch.zeros(1, dtype=torch.float64))) == 0.0
    assert float(curve(torch.ones(1, dtype=torch.float64))) == 1.0
    assert float((y[1:] - y[:-1]).min()) >= 0.0
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


@pytest.mark.parametrize("metric", sorted(BUILTIN_PROGRAMS))
def test_random_params_give_valid_curves(metric):
    space = load_space(metric)
    rng = random.Random(metric)
    bounds = space.bounds()
    for trial in range(12):
        if trial == 0:
            params = {n: lo for n, (lo, hi) in bounds.items()}  # extreme corners too
        elif trial == 1:
            params = {n: hi for n, (lo, hi) in bounds.items()}
        else:
            params = {n: rng.uniform(lo, hi) for n, (lo, hi) in bounds.items()}
        loss = space.build_loss(params, ignore_index=255)
        assert isinstance(loss, SurrogateLoss) and loss.ignore_index == 255
        for curve in loss.curves.values():
            is_valid_curve(curve)


def test_check_loss_passes_on_a_random_point():
    space = load_space("biou")
    rng = random.Random(0)
    params = {n: rng.uniform(lo, hi) for n, (lo, hi) in space.bounds().items()}
    assert all(r.passed for r in check_loss(space.build_loss(params), trials=2))


def test_identity_params_give_the_identity_curve():
    for metric in ("miou", "bf1"):
        loss = load_space(metric).build_loss(load_space(metric).identity_params())
        for curve in loss.curves.values():
            assert torch.allclose(curve(X), X, atol=1e-12)
    for cs in (CurveSpace("linear", knots=3), CurveSpace("linear", knots=2, knots_x=(0.2, 0.7)),
               CurveSpace("bezier", pieces=3)):
        assert torch.allclose(cs.curve(cs.identity_raw())(X), X, atol=1e-12)


def test_paper_search_mu_is_the_identity_initial_point():
    np = pytest.importorskip("numpy")
    if not GOLDEN.is_file():
        pytest.skip("shared golden files not available")
    golden = np.load(GOLDEN)
    space = load_space("miou")
    initial = space.initial_params()
    mu = golden["search_mu_raw_miou"]
    assert [initial[n] for n in space.param_names()] == pytest.approx(mu.tolist())
    ctrl = space.curve_specs(initial)
    assert ctrl["inter"]["points"] + ctrl["union"]["points"] == pytest.approx(
        golden["search_mu_ctrl_miou"].tolist(), abs=1e-12)
    # ~ the identity, so only identity and paper:... are enqueued
    assert list(space.reference_points()) == ["identity", "paper:asl-voc-miou"]


@pytest.mark.parametrize("metric", ["miou", "fwiou", "macc", "gacc", "biou", "bf1"])
def test_paper_reference_round_trips_to_the_published_points(metric):
    space = load_space(metric)
    params = space.reference_points()[f"paper:asl-voc-{metric}"]
    specs = space.curve_specs(params)
    for name, spec in specs.items():
        published = PRESETS[f"asl-voc-{metric}"]["curves"][name]["points"]
        assert spec["points"] == pytest.approx(published, abs=1e-12)


def test_bezier_raw_inverse():
    # s = (P_k - P_{k-1}) / (1 - P_{k-1}) per coordinate, layout [x1, y1, x2, y2, ...]
    raw = bezier_raw_from_points([0.25, 0.5, 0.5, 0.75, 0.75, 1.0])
    assert raw == pytest.approx([0.25, 0.5, 1 / 3, 0.5, 0.5, 1.0])
    # once a coordinate reached 1, any s gives the same point: 0
    assert bezier_raw_from_points([0.5, 1.0, 0.6, 1.0, 0.7, 1.0])[1::2] == [1.0, 0.0, 0.0]


def test_ce_weight_searched_and_fixed():
    data = {"metric": "macc", "curves": {"acc": {"kind": "bezier"}},
            "ce_weight": {"low": 0.0, "high": 0.5}}
    space = parse_space(data)
    assert space.param_names()[-1] == "ce_weight"
    params = space.identity_params()
    assert params["ce_weight"] == 0.0
    assert space.loss_spec(params)["name"] == "surrogate"
    spec = space.loss_spec({**params, "ce_weight": 0.3}, ignore_index=255)
    assert spec["combine"][1] == {"name": "cross_entropy", "weight": 0.3, "ignore_index": 255}
    assert spec["combine"][0]["metric"] == "macc" and spec["combine"][0]["weight"] == 1.0
    fixed = parse_space({**data, "ce_weight": {"fixed": 0.2}})
    assert "ce_weight" not in fixed.param_names()
    assert fixed.loss_spec(fixed.identity_params())["combine"][1]["weight"] == 0.2


def test_composite_space():
    space = CompositeSpace((("miou", 1.0, load_space("miou")), ("bf1", None, load_space("bf1"))))
    names = space.param_names()
    assert names[0] == "miou.inter.0" and "bf1.edge_or_eroded.1" in names
    assert names[-1] == "mix.bf1" and len(names) == 12 + 8 + 1
    spec = space.loss_spec({**space.identity_params(), "mix.bf1": 1.0})
    assert [(p["metric"], p["weight"]) for p in spec["combine"]] == [("miou", 0.5), ("bf1", 0.5)]
    loss = space.build_loss(space.identity_params())
    assert isinstance(loss, CombinedLoss) and len(loss.losses) == 2


def test_user_metric_gets_a_default_space(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOLOSS_TRUST_CODE", "1")  # the space runs the user's file
    path = tmp_path / "my_metric.py"
    path.write_text(
        "from autoloss.core.programs import BUILTIN_PROGRAMS, MetricProgram\n"
        "p = BUILTIN_PROGRAMS['mdice']\n"
        "dice2 = MetricProgram('dice2', p.curves, p.stats, p.score)\n")
    space = load_space(f"{path}:dice2")
    assert space.source == "default" and space.reference is None
    assert {n: (c.kind, c.pieces) for n, c in space.curves.items()} == {
        "inter": ("bezier", 2), "union": ("bezier", 2)}
    loss = space.build_loss(space.identity_params())
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    assert torch.isfinite(loss(logits, target))


def test_unknown_metric_name():
    with pytest.raises(ValueError, match="did you mean 'miou'"):
        load_space("mioU")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_space("nope.yaml")


GOOD = """metric: miou
curves:
  inter: {kind: bezier, pieces: 2}
  union: {kind: bezier, pieces: 2}
"""


@pytest.mark.parametrize(("text", "message"), [
    (GOOD + "options: {classes: present\n", r"line \d+: invalid YAML"),
    (GOOD + "initial_point: {}\n", "did you mean 'initial_points'"),
    (GOOD.replace("pieces: 2}\n", "pices: 2}\n", 1), "did you mean 'pieces'"),
    (GOOD.replace("kind: bezier", "kind: bezir", 1), "did you mean 'bezier'"),
    (GOOD.replace("pieces: 2", "pieces: two", 1), r"pieces must be an integer in \[1, 32\]"),
    (GOOD.replace("pieces: 2", "pieces: 100000000", 1),
     r"curves.inter.pieces must be an integer in \[1, 32\] .*MAX_CURVE_PIECES.*100000000"),
    (GOOD.replace("kind: bezier, pieces: 2", "kind: linear, knots: 1000", 1),
     r"knots must be an integer in \[1, 32\]"),
    (GOOD.replace("pieces: 2}", "pieces: 2, low: -0.1}", 1), r"0 <= low <= high <= 1"),
    (GOOD.replace("pieces: 2}", "pieces: 2, low: 0.8, high: 0.2}", 1), "low=0.8, high=0.2"),
    (GOOD.replace("pieces: 2}", "pieces: 2, high: 1.5}", 1), "high=1.5"),
    (GOOD.replace("pieces: 2}", "pieces: 2, high: yes}", 1), "high must be a number"),
    (GOOD.replace("  union", "  unoin", 1), "did you mean 'union'"),
    (GOOD.replace("  union: {kind: bezier, pieces: 2}\n", ""), r"missing \['union'\]"),
    (GOOD.replace("miou", "mio"), "did you mean 'miou'"),
    (GOOD.replace("metric: miou\n", ""), "missing required key 'metric'"),
    ("- metric\n", "must be a mapping"),
    (GOOD + "options: {tol: 2.5}\n", "tol must be int"),
    (GOOD + "options: {classes: some}\n", "classes must be 'present' or 'all'"),
    (GOOD + "ce_weight: {fixed: 0.1, low: 0}\n", "either 'fixed' or 'low'/'high'"),
    (GOOD + "ce_weight: {fixd: 0.1}\n", "did you mean 'fixed'"),
    (GOOD + "initial_points: {a: {inter: [0.5, 0.5]}}\n", "must be a list of 6 numbers"),
    (GOOD + "initial_points: {a: {inter: [0.5, 0.5, 0.5, 0.5, 0.5, 2.0]}}\n", "[low, high]"),
    (GOOD + "reference: asl-voc-miuo\n", "did you mean 'asl-voc-miou'"),
    (GOOD.replace("kind: bezier, pieces: 2", "kind: linear, knots_x: [0.5, 0.2]", 1),
     "strictly increasing"),
])
def test_malformed_files(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_space(path)
    assert str(path) in str(info.value)  # every error names the file


def test_linear_space_from_file(tmp_path):
    path = tmp_path / "lin.yaml"
    path.write_text("metric: gacc\ncurves:\n  acc: {kind: linear, knots: 4, low: 0.05}\n")
    space = load_space(path)
    assert space.curves["acc"].size == 8 and space.bounds()["acc.0"] == (0.05, 1.0)
    params = {n: 0.9 for n in space.param_names()}
    is_valid_curve(space.build_loss(params).curves["acc"])
