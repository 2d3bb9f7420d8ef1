"""ops.neighbors: knn and radius_graph against a brute-force numpy reference, and torch path == KD-tree path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ops.neighbors as nb
from geo3d.errors import InputError
from ops.neighbors import knn, radius_graph


def _sq_dist_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, M) float64 squared distances, summed dimension by dimension from 0 like scipy."""
    d2 = np.zeros((len(x), len(y)))
    for k in range(x.shape[1]):
        d2 = d2 + (x[:, None, k] - y[None, :, k]) ** 2
    return d2


def _brute_radius(points, r, batch=None, loop=False, max_neighbors=None) -> torch.Tensor:
    x = points.double().numpy()
    d2 = _sq_dist_matrix(x, x)
    ok = d2 <= r * r
    if batch is not None:
        ok &= batch.numpy()[:, None] == batch.numpy()[None, :]
    if not loop:
        np.fill_diagonal(ok, False)
    edges = []
    for t in range(len(x)):
        src = np.flatnonzero(ok[t])
        if max_neighbors is not None:
            src = np.sort(src[np.lexsort((src, d2[t, src]))][:max_neighbors])
        edges += [(s, t) for s in src]
    return torch.tensor(edges, dtype=torch.int64).reshape(-1, 2).T


def _brute_knn(points, queries, k, pb=None, qb=None):
    d2 = _sq_dist_matrix(queries.double().numpy(), points.double().numpy())
    if pb is not None:
        d2[qb.numpy()[:, None] != pb.numpy()[None, :]] = np.inf
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    dist = np.sqrt(np.take_along_axis(d2, order, 1))
    index = np.where(np.isinf(dist), -1, order)
    pad = k - index.shape[1]
    index = np.pad(index, ((0, 0), (0, pad)), constant_values=-1)
    dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
    return torch.from_numpy(index), torch.from_numpy(dist).float()


def _lattice(n: int, spacing: float, dim: int = 3) -> torch.Tensor:
    axes = [torch.arange(n, dtype=torch.float64) * spacing] * dim
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dim)


@pytest.fixture
def cloud():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(600, 3, generator=g)
    batch = torch.randint(0, 3, (600,), generator=g)  # unsorted batch index
    return points, batch


# ---------------------------------------------------------------------------------------------------- radius


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("batched", [False, True])
def test_radius_graph_matches_brute_force(cloud, loop, batched):
    points, batch = cloud
    batch = batch if batched else None
    edges = radius_graph(points, 0.12, batch=batch, loop=loop)
    expected = _brute_radius(points, 0.12, batch, loop)
    assert edges.dtype == torch.int64 and edges.shape[0] == 2
    assert expected.shape[1] > 300  # a non-trivial graph
    assert torch.equal(edges, expected)  # same edges, same order (target, then source)


def test_radius_graph_is_symmetric_and_sorted(cloud):
    points, batch = cloud
    src, tgt = radius_graph(points, 0.1, batch=batch)
    key = tgt * len(points) + src
    assert bool((key[1:] > key[:-1]).all())
    assert set(zip(src.tolist(), tgt.tolist())) == set(zip(tgt.tolist(), src.tolist()))
    assert bool((batch[src] == batch[tgt]).all())


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("loop", [False, True])
def test_radius_torch_path_equals_kdtree_path(cloud, dim, loop):
    points, batch = cloud
    points = points[:, :dim].contiguous()
    cpu = radius_graph(points, 0.1, batch=batch, loop=loop)
    torch_path = nb._radius_edges_torch(points, 0.1, batch, loop)
    assert cpu.shape[1] > 300
    assert torch.equal(torch_path, cpu)


def test_radius_points_exactly_at_r_agree_with_scipy():
    # On a 0.1 m lattice some neighbours are at exactly r in float64, others a rounding error beyond it.
    points = _lattice(4, 0.1)
    expected = _brute_radius(points, 0.1)
    assert 0 < expected.shape[1] < 2 * 144  # 144 axis neighbours in exact arithmetic; rounding drops some
    assert torch.equal(radius_graph(points, 0.1), expected)
    assert torch.equal(nb._radius_edges_torch(points, 0.1, None, False), expected)


def test_radius_integer_lattice_includes_distance_r():
    points = _lattice(3, 1.0)
    edges = radius_graph(points, 1.0)
    assert edges.shape[1] == 2 * 54  # 3 x 3 x 3 grid: 3 axes x 9 lines x 2 pairs
    assert torch.equal(nb._radius_edges_torch(points, 1.0, None, False), edges)


def test_radius_torch_path_in_small_chunks(cloud, monkeypatch):
    points, batch = cloud
    expected = radius_graph(points, 0.1, batch=batch)
    monkeypatch.setattr(nb, "CHUNK_ELEMENTS", 512)  # several chunks in both passes
    assert torch.equal(nb._radius_edges_torch(points, 0.1, batch, False), expected)


@pytest.mark.parametrize("loop", [False, True])
def test_max_neighbors_keeps_nearest_and_warns(cloud, loop):
    points, batch = cloud
    degree = torch.bincount(radius_graph(points, 0.12, batch=batch, loop=loop)[1], minlength=len(points))
    truncated = int((degree > 5).sum())
    assert 0 < truncated < len(points)
    with pytest.warns(UserWarning, match=f"radius_graph: {truncated} of 600 points .* max_neighbors=5"):
        edges = radius_graph(points, 0.12, max_neighbors=5, batch=batch, loop=loop)
    assert torch.equal(edges, _brute_radius(points, 0.12, batch, loop, max_neighbors=5))
    with pytest.warns(UserWarning, match=f"{truncated} of 600"):
        torch_path = nb._keep_nearest(points, nb._radius_edges_torch(points, 0.12, batch, loop), 5, 0.12)
    assert torch.equal(torch_path, edges)


def test_max_neighbors_ties_break_by_source_index():
    # Point 2 has four neighbours at exactly 1 m: keep the two with the lowest indices.
    points = torch.tensor([[1.0, 0], [0, 1], [0, 0], [-1, 0], [0, -1]])
    with pytest.warns(UserWarning, match="1 of 5 points"):
        src, tgt = radius_graph(points, 1.0, max_neighbors=2)
    assert src[tgt == 2].tolist() == [0, 1]


def test_no_warning_without_truncation(cloud):
    points, batch = cloud
    max_degree = int(torch.bincount(radius_graph(points, 0.1, batch=batch)[1]).max())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edges = radius_graph(points, 0.1, max_neighbors=max_degree, batch=batch)
    assert torch.equal(edges, radius_graph(points, 0.1, batch=batch))


def test_radius_graph_batches_never_connect():
    points = torch.zeros(4, 3)  # all at the same spot
    edges = radius_graph(points, 1.0, batch=torch.tensor([0, 1, 0, 1]))
    assert edges.tolist() == [[2, 3, 0, 1], [0, 1, 2, 3]]


def test_radius_graph_empty_and_single():
    empty = torch.zeros(0, 3)
    assert radius_graph(empty, 1.0).shape == (2, 0)
    assert nb._radius_edges_torch(empty, 1.0, None, False).shape == (2, 0)
    one = torch.zeros(1, 3)
    assert radius_graph(one, 1.0).shape == (2, 0)
    assert radius_graph(one, 1.0, loop=True).tolist() == [[0], [0]]
    assert nb._radius_edges_torch(one, 1.0, None, True).tolist() == [[0], [0]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"points": torch.rand(5)}, "points: expected shape"),
        ({"points": torch.arange(15).reshape(5, 3)}, "floating-point"),
        ({"points": torch.tensor([[0.0, float("nan"), 0]])}, "NaN"),
        ({"r": 0.0}, "r: expected a finite number > 0"),
        ({"r": float("inf")}, "r: expected"),
        ({"max_neighbors": 0}, "max_neighbors"),
        ({"batch": torch.zeros(4, dtype=torch.int64)}, r"batch: expected shape \(5,\)"),
        ({"batch": torch.zeros(5)}, "batch: expected an int64"),
        ({"batch": torch.tensor([0, 0, -1, 0, 0])}, ">= 0"),
    ],
)
def test_radius_graph_rejects_bad_input(kwargs, match):
    args = {"points": torch.rand(5, 3), "r": 0.5} | kwargs
    with pytest.raises(InputError, match=match):
        radius_graph(**args)


# ---------------------------------------------------------------------------------------------------- knn


@pytest.mark.parametrize("batched", [False, True])
def test_knn_matches_brute_force(cloud, batched):
    points, batch = cloud
    queries = torch.rand(200, 3, generator=torch.Generator().manual_seed(1))
    qb = torch.arange(200) % 3 if batched else None
    pb = batch if batched else None
    index, dist = knn(points, queries, 8, pb, qb)
    ref_index, ref_dist = _brute_knn(points, queries, 8, pb, qb)
    assert index.dtype == torch.int64 and dist.dtype == torch.float32 and index.shape == (200, 8)
    assert torch.equal(index, ref_index)
    torch.testing.assert_close(dist, ref_dist, rtol=0, atol=1e-7)


def test_knn_finds_itself_first(cloud):
    points, _ = cloud
    index, dist = knn(points, points, 3)
    assert torch.equal(index[:, 0], torch.arange(len(points)))
    assert bool((dist[:, 0] == 0).all())


def test_knn_pads_small_and_missing_batch_items():
    points = torch.tensor([[0.0, 0, 0], [1, 0, 0], [5, 0, 0]])
    pb = torch.tensor([0, 0, 1])
    queries = torch.tensor([[0.1, 0, 0], [4, 0, 0], [9, 9, 9]])
    qb = torch.tensor([0, 1, 2])  # batch item 2 has no points
    for fn in (knn, nb._knn_torch):
        index, dist = fn(points, queries, 3, pb, qb)
        assert index.tolist() == [[0, 1, -1], [2, -1, -1], [-1, -1, -1]]
        expected = torch.tensor([[0.1, 0.9, np.inf], [1.0, np.inf, np.inf], [np.inf] * 3])
        torch.testing.assert_close(dist, expected)


@pytest.mark.parametrize("batched", [False, True])
def test_knn_torch_path_equals_kdtree_path(cloud, batched, monkeypatch):
    points, batch = cloud
    queries = torch.rand(300, 3, generator=torch.Generator().manual_seed(2))
    qb = torch.arange(300) % 3 if batched else None
    pb = batch if batched else None
    index, dist = knn(points, queries, 16, pb, qb)
    monkeypatch.setattr(nb, "CHUNK_ELEMENTS", 1000)  # several chunks per batch item
    t_index, t_dist = nb._knn_torch(points, queries, 16, pb, qb)
    assert torch.equal(t_index, index)
    torch.testing.assert_close(t_dist, dist, rtol=0, atol=1e-7)


def test_knn_empty():
    index, dist = knn(torch.zeros(0, 3), torch.rand(4, 3), 2)
    assert index.tolist() == [[-1, -1]] * 4 and bool(torch.isinf(dist).all())
    index, dist = knn(torch.rand(4, 3), torch.zeros(0, 3), 2)
    assert index.shape == (0, 2) and dist.shape == (0, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k: expected an integer >= 1"),
        ({"k": 2.0}, "k: expected an integer"),
        ({"queries": torch.rand(3, 2)}, r"queries: expected shape \(\*, 3\)"),
        ({"points_batch": torch.zeros(5, dtype=torch.int64)}, "give both or neither"),
        (
            {"points_batch": torch.zeros(4, dtype=torch.int64), "queries_batch": torch.zeros(3, dtype=torch.int64)},
            r"points_batch: expected shape \(5,\)",
        ),
    ],
)
def test_knn_rejects_bad_input(kwargs, match):
    args = {"points": torch.rand(5, 3), "queries": torch.rand(3, 3), "k": 2} | kwargs
    with pytest.raises(InputError, match=match):
        knn(**args)


# ---------------------------------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
def test_cuda_matches_cpu(cloud):
    points, batch = cloud
    edges = radius_graph(points, 0.1, batch=batch, loop=True)
    cuda_edges = radius_graph(points.cuda(), 0.1, batch=batch.cuda(), loop=True)
    assert cuda_edges.is_cuda and torch.equal(cuda_edges.cpu(), edges)
    with pytest.warns(UserWarning, match="max_neighbors=4"):
        cuda_trunc = radius_graph(points.cuda(), 0.1, max_neighbors=4, batch=batch.cuda())
    with pytest.warns(UserWarning, match="max_neighbors=4"):
        assert torch.equal(cuda_trunc.cpu(), radius_graph(points, 0.1, max_neighbors=4, batch=batch))
    index, dist = knn(points, points[:100], 8, batch, batch[:100])
    c_index, c_dist = knn(points.cuda(), points[:100].cuda(), 8, batch.cuda(), batch[:100].cuda())
    assert c_index.is_cuda and torch.equal(c_index.cpu(), index)
    torch.testing.assert_close(c_dist.cpu(), dist, rtol=0, atol=1e-6)
