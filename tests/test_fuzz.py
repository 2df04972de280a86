"""Fuzzing (hypothesis): every loss and ``evaluate`` on random shapes, dtypes, label ranges,
ignore indices, logit scales, empty and single-class inputs. Each call either raises a clear
``ValueError``/``TypeError`` naming what is wrong, or returns finite values (and, for a loss,
finite gradients). Non-finite logits are not generated: NaN in gives NaN out, as documented.

Hostile inputs (issue 26): ``autoloss search`` arguments, loss files and dataset specs built
from values that broke earlier versions (empty names, huge and negative numbers, broken YAML,
``1e308``, ``?size=20000x20000``): each gives a result or one ``autoloss`` error (exit 2), never a
traceback, a hang or a huge allocation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoloss import evaluate
from autoloss.cli import app as cli
from autoloss.errors import AutoLossError
from autoloss.losses import load_loss
from autoloss.losses.loader import loss_names

BINARY = {"lovasz_hinge", "binary_cross_entropy", "paddleseg-lovasz-hinge-bce"}
NAMES = sorted(set(loss_names()["presets"]) | set(loss_names()["baselines"]) - {"surrogate"})
# words a clear error names: the argument or the input at fault
NAMED = ("target", "logits", "ignore_index", "input", "num_classes", "pred", "label", "RMI")
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def _clear(err: Exception) -> bool:
    text = str(err)
    return bool(text) and any(word in text for word in NAMED)


@SETTINGS
@given(name=st.sampled_from(NAMES), n=st.integers(0, 3), c=st.integers(2, 4),
       h=st.integers(1, 6), w=st.integers(1, 6), ignore=st.sampled_from([None, 255, -100, 0]),
       scale=st.sampled_from([0.0, 1.0, 30.0, 1e4]), extra=st.integers(0, 2),
       all_ignored=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_every_loss_is_finite_or_says_what_is_wrong(name, n, c, h, w, ignore, scale, extra,
                                                    all_ignored, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    is_preset = name in loss_names()["presets"]
    options = {} if is_preset or ignore is None else {"ignore_index": ignore}
    loss = load_loss(name if is_preset else {"name": name, **options})
    channels = 1 if name in BINARY else c
    logits = (torch.randn(n, channels, h, w, generator=g, dtype=dtype) * scale)
    logits.requires_grad_(True)
    high = 2 if channels == 1 else c
    target = torch.randint(0, high + extra, (n, h, w), generator=g)
    if ignore is not None:
        if all_ignored:
            target[:] = ignore
        elif n and h * w > 1:
            target[..., 0] = ignore
    try:
        out = loss(logits, target)
        out.backward()
    except (ValueError, TypeError) as err:
        assert _clear(err), f"{name}: unclear error {err!r}"
        return
    assert torch.isfinite(out).all(), f"{name}: loss {out}"
    assert logits.grad is not None and torch.isfinite(logits.grad).all(), f"{name}: gradient"


@SETTINGS
@given(n=st.integers(0, 3), c=st.integers(1, 4), h=st.integers(0, 6), w=st.integers(1, 6),
       low=st.integers(-2, 0), extra=st.integers(0, 2), ignore=st.sampled_from([None, 255, -1, 0]),
       tol=st.integers(0, 3), seed=st.integers(0, 2**31 - 1))
def test_evaluate_is_in_range_or_says_what_is_wrong(n, c, h, w, low, extra, ignore, tol, seed):
    rng = np.random.default_rng(seed)
    pred = rng.integers(low, c + extra, (n, h, w))
    target = rng.integers(low, c + extra, (n, h, w))
    try:
        scores = evaluate(pred, target, num_classes=c, ignore_index=ignore, tol=tol)
    except (ValueError, TypeError) as err:
        assert _clear(err), f"unclear error {err!r}"
        return
    for metric, value in scores.items():
        assert math.isnan(value) or 0.0 <= value <= 1.0 + 1e-12, (metric, value)


@pytest.mark.parametrize("name", ["cross_entropy", "soft-miou", "lovasz_softmax"])
def test_nan_logits_give_nan_not_an_exception(name):
    """The documented behaviour for non-finite input: NaN propagates (no silent number)."""
    logits = torch.full((1, 3, 4, 4), math.nan, requires_grad=True)
    out = load_loss(name)(logits, torch.zeros(1, 4, 4, dtype=torch.long))
    assert not torch.isfinite(out)


# values that broke earlier versions, as a user would type them
HOSTILE = ["", "0", "-1", "1", "3", "1e-5", "1e308", "-1e308", "nan", "inf", "abc", "null", "[1",
           "[]", "{}", "[1, 2]", "true", "100000000", "2.5", "16x16", "20000x20000", "0x4"]
SEARCH_FLAGS = ["--metric", "--trials", "--tol", "--proxy-steps", "--width", "--depth",
                "--seed", "--workers", "--rescore-top", "--rescore-seeds", "--proxy-subset",
                "--proxy-batch-size", "--proxy-eval-every", "--proxy-crop", "--timeout",
                "--data", "--study", "--sampler", "--space", "--init-from"]
PROXY_KEYS = ["steps", "size", "tol", "metrics", "width", "depth", "lr", "batch_size", "subset",
              "eval_every", "warm_start", "crop", "num_threads", "data", "nosuch", "model"]
METRIC_WORDS = ["miou", "bf1", "biou", "nosuch", "miou,miou", "miou+0.5*bf1", "miou,", ",",
                "miou+", "*", "x.py:f"]


class _Reached(Exception):
    """Raised where a search would open its study: every argument was accepted."""


FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@FUZZ
@given(flags=st.lists(st.tuples(st.sampled_from(SEARCH_FLAGS),
                                st.sampled_from(HOSTILE + METRIC_WORDS)), max_size=3),
       proxy=st.lists(st.tuples(st.sampled_from(PROXY_KEYS), st.sampled_from(HOSTILE)),
                      max_size=2))
def test_search_arguments_are_accepted_or_one_line(flags, proxy, tmp_path_factory):
    """Each argument combination is accepted (the search reaches its study) or refused with
    one line, exit 2 (argparse's own refusals exit 2 too); nothing trains here."""
    import contextlib
    import io

    from autoloss.search import run as search_run

    out = tmp_path_factory.mktemp("fuzz") / "run"
    argv = ["search", "--out", str(out), "--no-progress", "--no-plots"]
    for flag, value in flags:
        argv += [flag, value]
    for key, value in proxy:
        argv += ["--proxy", f"{key}={value}"]

    def reached(*args, **kwargs):
        raise _Reached

    err = io.StringIO()
    original = search_run.load_or_create
    search_run.load_or_create = reached
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(argv)
    except SystemExit as exit_:  # argparse: a malformed argument
        code = exit_.code
    except _Reached:
        return
    finally:
        search_run.load_or_create = original
    text = err.getvalue().strip()
    assert code == 2, (argv, code, text)
    assert "Traceback" not in text and len(text.splitlines()) == 1 or "usage:" in text, (argv, text)


LOSS_KEYS = ["name", "metric", "tol", "smooth", "eps", "class_weights", "gamma", "alpha",
             "ignore_index", "from_logits", "curves", "weights", "losses", "mode", "classes",
             "drop_bg", "nosuch"]
LOSS_NAMES = ["surrogate", "cross_entropy", "focal", "dice", "lovasz_softmax", "combine",
              "tversky", "asl-voc-miou", "soft-miou", "nosuch", ""]
YAML_VALUES = st.recursive(
    st.sampled_from([0, -1, 1, 2, 1e-5, 1e308, -1e308, 1000000000, "", "abc", None, True,
                     [1e308, 1e308, 1e308], "miou", "bf1", "bezier", "identity"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["points", "family", "pieces", "knots", "name", "weight", "inter"]),
        inner, max_size=3),
    max_leaves=6)


@FUZZ
@given(spec=st.dictionaries(st.sampled_from(LOSS_KEYS), YAML_VALUES, max_size=4),
       name=st.sampled_from(LOSS_NAMES), as_text=st.booleans())
def test_a_loss_file_loads_and_gives_finite_values_or_one_clear_error(spec, name, as_text,
                                                                       tmp_path_factory):
    """A loss file of random keys and values: a clear error, or a loss with a finite value on
    a small batch (``tol`` and option limits checked before allocating)."""
    import yaml

    path = tmp_path_factory.mktemp("loss") / "loss.yaml"
    document = {"name": name, **spec}
    path.write_text(yaml.safe_dump(document) if not as_text else
                    yaml.safe_dump(document).replace("name:", "name: [", 1))
    try:
        loss = load_loss(path)
        logits = torch.randn(2, 3, 16, 16, requires_grad=True)
        target = torch.randint(0, 3, (2, 16, 16))
        value = loss(logits, target)
    except AutoLossError as err:
        assert str(err) and "\n" not in str(err).strip(), repr(err)
        return
    except (ValueError, TypeError) as err:  # shape checks of the loss itself (3 classes here)
        assert _clear(err), f"unclear error {err!r} for {document}"
        return
    assert torch.isfinite(value).all(), (document, value)


SPEC_KINDS = ["shapes", "npz", "folder", "camvid", "voc", "cityscapes", "nosuch", ""]
SPEC_KEYS = ["size", "n", "seed", "ignore_index", "num_classes", "mean", "std", "subset", "foo"]


@FUZZ
@given(kind=st.sampled_from(SPEC_KINDS),
       path=st.sampled_from(["", "missing", "garbage.npz", "empty", "a?b"]),
       options=st.lists(st.tuples(st.sampled_from(SPEC_KEYS), st.sampled_from(
           HOSTILE + ["1,2,3", "0.5,0.5", "none", "4"])), max_size=3),
       split=st.sampled_from(["train", "val", "test", "nosuch"]))
def test_a_dataset_spec_loads_or_is_one_clear_error(kind, path, options, split,
                                                    tmp_path_factory):
    """A dataset spec of any kind, path and options: a dataset, or one clear error naming the
    spec, the file or the option (limits checked before allocating)."""
    from autoloss.data import load_dataset

    root = tmp_path_factory.mktemp("data")
    (root / "garbage.npz").write_bytes(b"PK\x03\x04 not a zip")
    (root / "empty").mkdir()
    spec = kind + (f":{root / path}" if path else "")
    if options:
        spec += "?" + "&".join(f"{k}={v}" for k, v in options)
    if kind == "shapes" and not any(k == "n" for k, _ in options):
        spec += ("&" if options else "?") + "n=4"  # the default 512 images: too slow here
    try:
        dataset = load_dataset(spec, split)
        assert len(dataset) >= 0
    except AutoLossError as err:
        assert str(err) and "\n" not in str(err).strip(), repr(err)
    except OSError as err:  # the CLI's one line for the machine's errors (names the file)
        assert err.filename or str(err), repr(err)
