"""Your own data: every bad upload gets a message naming the problem; good data becomes a distribution."""

import math

import numpy as np
import pytest
import torch

import dgm.core.data
from dgm.core import userdata as U
from dgm.core.metrics import Grid


def csv_bytes(rows, header=None):
    lines = ([header] if header else []) + [",".join(map(str, r)) for r in rows]
    return ("\n".join(lines) + "\n").encode()


GOOD = [(i * 0.1, math.sin(i * 0.1)) for i in range(50)]


def test_two_columns_with_and_without_header():
    a = U.parse_csv(csv_bytes(GOOD))
    b = U.parse_csv(csv_bytes(GOOD, header="x,y"))
    assert a.shape == (50, 2) and np.array_equal(a, b)


def test_semicolon_tab_and_bom_are_accepted():
    text = "\ufeffx;y\n" + "\n".join(f"{x};{y}" for x, y in GOOD)
    assert U.parse_csv(text.encode("utf-8")).shape == (50, 2)
    assert U.parse_csv("\n".join(f"{x}\t{y}" for x, y in GOOD).encode()).shape == (50, 2)


@pytest.mark.parametrize(
    "raw,fragment",
    [
        (b"", "empty"),
        (b"\n\n  \n", "no rows"),
        (csv_bytes([(1,)] * 20), "exactly two columns"),
        (csv_bytes([(1, 2, 3)] * 20), "exactly two columns"),
        (csv_bytes([(1, 2)] * 5 + [("abc", 2)] + [(1, 2)] * 10), "not a number"),
        (csv_bytes([(1, 2)] * 5 + [("nan", 2)] + [(1, 2)] * 10), "NaN"),
        (csv_bytes([(1, 2)] * 5 + [("inf", 2)] + [(1, 2)] * 10), "NaN and infinity"),
        (b"x,y\n", "header but no data"),
        (csv_bytes([(1e300, 2)] + GOOD), "within"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "not a text file"),
        ("x,y\n1,2\n".encode("utf-16"), "not a text file"),
        ("x,y\n" + "\n".join(f"{i},é{i}" for i in range(20)), "not UTF-8"),
        (csv_bytes(GOOD[:5]), "at least 10"),
        (csv_bytes([(1, 1)] * 20), "the same"),
    ],
    ids=["empty", "blank", "one-column", "three-columns", "text-cell", "nan", "inf", "header-only", "1e300",
         "binary", "utf16", "latin1", "too-few", "constant"],
)
def test_bad_files_name_their_problem(raw, fragment):
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    with pytest.raises(U.UserDataError, match=fragment):
        U.parse_csv(raw)


def test_ten_million_rows_are_refused_quickly():
    raw = b"1,2\n" * 10_000_000  # 40 MB: refused on size before parsing
    with pytest.raises(U.UserDataError, match="limit"):
        U.parse_csv(raw)
    raw = b"1,2\n" * (U.MAX_ROWS + 5)  # under the size limit, over the row limit
    with pytest.raises(U.UserDataError, match="rows"):
        U.parse_csv(raw)


def test_a_drawing_keeps_where_it_was_drawn_unless_rescaling_is_asked_for():
    pts = np.random.default_rng(3).normal(size=(200, 2)) * 0.4 + (2.0, -1.0)
    kept, scaling = U.make_distribution(pts, "your drawing", rescale=False)
    assert np.allclose(kept.points.numpy(), pts, atol=1e-6) and "kept where they are" in scaling.describe()
    moved, scaling = U.make_distribution(pts, "your drawing")
    assert abs(float(moved.points.mean(0).abs().max())) < 1e-5 and "centred by subtracting" in scaling.describe()
    assert kept.name != moved.name


def test_drawing_with_fewer_than_ten_points():
    with pytest.raises(U.UserDataError, match="at least 10"):
        U.make_distribution(np.zeros((9, 2)) + np.arange(9)[:, None])


def test_distribution_is_standardised_and_registered():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(400, 2)) * [50, 5] + [1000, -20]
    dist, scaling = U.make_distribution(pts)
    assert dist.name.startswith("custom:") and dgm.core.data.get(dist.name) is dist
    assert scaling.center == pytest.approx(tuple(pts.mean(0)))
    std = dist.points.std(0, correction=0)
    assert float(std.max()) == pytest.approx(U.TARGET_STD, rel=1e-3)
    assert "400 points" in scaling.describe()
    again, _ = U.make_distribution(pts.copy())
    assert again is dist, "the same data maps to the same name"


def test_kde_distribution_density_integrates_and_samples_are_seeded():
    pts = U.spray(np.array([[0.0, 0.0], [3.0, 1.0]]), 40, width=0.5, noise=0.05, seed=1)
    dist, _ = U.make_distribution(pts)
    grid = Grid.over(dist.box, 300)
    assert grid.integral(dist.log_prob(grid.points).exp()) == pytest.approx(1.0, abs=1e-2)
    a = dist.sample(100, torch.Generator().manual_seed(3))
    b = dist.sample(100, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (100, 2)
    assert dist.estimated


def test_spray_spreads_within_the_brush():
    pts = U.spray(np.array([[1.0, 2.0]]), 500, width=0.3, noise=0.0)
    d = np.linalg.norm(pts - [1.0, 2.0], axis=1)
    assert pts.shape == (500, 2) and d.max() <= 0.3 + 1e-12 and d.mean() == pytest.approx(0.2, abs=0.02)


# ---- issue 16: degenerate data, upload size, sessions that cannot evict each other -----------------

@pytest.mark.parametrize("rows", [
    [(0.1, 0.7)] * 10,  # the standard deviation of rounded floats is 8.5e-17, not 0
    [(1e5 + 1e-12 * i, -3e5) for i in range(20)],  # differences far below the values' precision
])
def test_points_that_are_all_the_same_up_to_rounding_are_refused(rows):
    with pytest.raises(U.UserDataError, match="the same"):
        U.parse_csv(csv_bytes(rows))


def test_small_values_with_a_real_spread_are_data():
    rng = np.random.default_rng(1)
    pts = 1e-6 * rng.normal(size=(30, 2))
    assert U.check_points(pts) is not None
    dist, scaling = U.make_distribution(pts)
    assert float(dist.points.std(0, correction=0).max()) == pytest.approx(U.TARGET_STD, rel=1e-3)


def test_setup_costs_what_model_points_cost_whatever_the_upload(monkeypatch):
    """A large upload is represented by a fixed subsample of MODEL_POINTS points: what every trainer
    evaluates its density against (the GAN's and the flows' grids) does not grow with the file."""
    from dgm.core import registry

    rng = np.random.default_rng(2)
    pts = rng.normal(size=(5 * U.MODEL_POINTS, 2)) * [2.0, 0.5]
    dist, scaling = U.make_distribution(pts)
    assert len(dist.points) == U.MODEL_POINTS and scaling.n_points == len(pts)
    assert f"use {U.MODEL_POINTS:,} of them" in scaling.describe()
    again, _ = U.make_distribution(pts.copy())
    assert again is dist and torch.equal(again.points, dist.points), "the same subsample for the same data"
    seen = []

    def counting(samples, points, bandwidth=None, chunk=8192):
        seen.append(len(samples))
        return torch.zeros(len(points))

    monkeypatch.setattr(U, "kde_log_prob", counting)
    for name, knob in (("gan", "data"), ("flow", "data"), ("demo", "data")):
        exp = registry.get(name)
        exp.make(exp.config(**{knob: dist.name}), seed=0, device="cpu")
    assert seen and max(seen) <= U.MODEL_POINTS
    assert dist.entropy > 0 and max(seen) <= U.MODEL_POINTS  # binned: no million evaluations either


def test_binned_entropy_matches_the_quadrature_of_the_density():
    from dgm.core.data import Distribution2D

    pts = U.spray(np.array([[0.0, 0.0], [2.0, 1.0]]), 15, width=0.6, noise=0.05, seed=3)
    dist, _ = U.make_distribution(pts)
    exact = Distribution2D.entropy.func(dist)  # 1,000 x 1,000 evaluations of the density
    assert dist.entropy == pytest.approx(exact, abs=2e-3)


def test_remembered_grid_evaluations_are_the_same_numbers_and_not_shared():
    from dgm.core.metrics import kde_log_prob

    dist, _ = U.make_distribution(np.random.default_rng(4).normal(size=(300, 2)))
    grid = Grid.over(dist.box, 120)
    a = dist.log_prob(grid.points)
    assert torch.equal(a, kde_log_prob(dist.points, grid.points, bandwidth=dist.bandwidth))
    a.fill_(0.0)
    assert torch.equal(dist.log_prob(grid.points), kde_log_prob(dist.points, grid.points, bandwidth=dist.bandwidth))


def test_no_number_of_other_uploads_evicts_a_data_set_someone_holds():
    import gc

    rng = np.random.default_rng(5)
    held, _ = U.make_distribution(rng.normal(size=(40, 2)))  # a session's data, held in its state
    dropped, _ = U.make_distribution(rng.normal(size=(40, 2)))
    dropped_name = dropped.name
    del dropped
    for i in range(3 * dgm.core.data.KEEP_UNHELD):  # a class uploading, or one hostile tab
        U.make_distribution(rng.normal(size=(10, 2)) + i)
    gc.collect()
    assert dgm.core.data.get(held.name) is held
    assert dgm.core.data.lookup(dropped_name) is None, "data nobody holds goes, beyond the recent ones"
    recent, _ = U.make_distribution(rng.normal(size=(40, 2)))
    name = recent.name
    del recent
    gc.collect()
    assert dgm.core.data.lookup(name) is not None, "the last data nobody holds stays a while"
