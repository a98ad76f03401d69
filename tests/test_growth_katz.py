"""Katz centrality (recursion and sparse solve) against networkx, the alpha bound on cyclic graphs,
a 10^4-unit network, and growth rule ``katz``."""

from __future__ import annotations

import os

os.environ["PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD"] = "1"

from typing import Any

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from principlelab.core.katz import (
    katz_centrality,
    katz_recursion,
    katz_sparse,
    network_adjacency,
    spectral_radius,
)
from principlelab.core.network import Network
from principlelab.core.signals import Signals
from principlelab.errors import GrowthError
from principlelab.plugins.growth.katz import KatzGrowth
from principlelab.testing import GrowthRuleConformance


def _net(widths: list[int], *, seed: int = 0, skips: bool = False, masked: bool = False,
         activation: str = "relu") -> Network:
    g = torch.Generator().manual_seed(seed)
    net = Network(widths, activation=activation, generator=g)
    if skips:
        for src, dst in [(0, 2), (1, len(widths) - 1)]:
            net.add_skip(src, dst)
            with torch.no_grad():
                net.skips[(src, dst)].weight.copy_(torch.randn(widths[dst], widths[src], generator=g) * 0.5)
    if masked:
        for block in [*net.layers, *net.skips.values()]:
            block.mask = (torch.rand(block.weight.shape, generator=g) < 0.5).float()
        net._changed()
    return net


def _reference(net: Network, alpha: float, influence: str) -> dict[Any, float]:
    graph = net.to_graph()
    graph = graph if influence == "in" else graph.reverse()
    return nx.katz_centrality(graph, alpha=alpha, beta=1.0, weight="weight", normalized=True, tol=1e-12)


def _worst(parts: list[torch.Tensor], ref: dict[Any, float]) -> float:
    return max(abs(float(parts[k][j]) - value) for (k, j), value in ref.items())


@pytest.mark.parametrize("method", ["recursion", "sparse"])
@pytest.mark.parametrize("influence", ["in", "out"])
@pytest.mark.parametrize(("skips", "masked", "alpha", "seed"), [
    (False, False, 0.1, 0), (True, False, 0.3, 1), (True, True, 0.5, 2), (False, True, 1.5, 3)])
def test_katz_matches_networkx(method: str, influence: str, skips: bool, masked: bool, alpha: float,
                               seed: int) -> None:
    net = _net([6, 9, 7, 8, 4], seed=seed, skips=skips, masked=masked)
    parts = katz_centrality(net, alpha=alpha, influence=influence, method=method)  # type: ignore[arg-type]
    assert [p.shape[0] for p in parts] == net.widths and all(p.dtype == torch.float64 for p in parts)
    assert _worst(parts, _reference(net, alpha, influence)) <= 1e-6


def test_unnormalized_and_zero_weights() -> None:
    net = _net([3, 4, 2])
    with torch.no_grad():
        net.layers[0].weight[1].zero_()  # unit (1, 1) has no incoming edges: centrality beta
    raw = katz_recursion(net, alpha=0.2, beta=2.0, normalized=False)
    assert float(raw[0][0]) == 2.0 and float(raw[1][1]) == 2.0
    expected = 2.0 + 0.2 * net.layers[0].weight.detach().abs().double()[0].sum() * 2.0
    assert abs(float(raw[1][0]) - float(expected)) < 1e-12
    sparse = katz_centrality(net, alpha=0.2, beta=2.0, normalized=False, method="sparse")
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(raw, sparse))


def _cycle_graph() -> np.ndarray:
    """0 -> 1 (w 2), 1 -> 2, 2 -> 0 (w 1), plus a tail 2 -> 3: spectral radius 2 ** (1/3)."""
    adj = np.zeros((4, 4))
    adj[0, 1], adj[1, 2], adj[2, 0], adj[2, 3] = 2.0, 1.0, 1.0, 0.5
    return adj


def test_sparse_solver_enforces_the_alpha_bound_on_a_cycle() -> None:
    adj = _cycle_graph()
    rho = 2 ** (1 / 3)
    assert abs(spectral_radius(adj) - rho) < 1e-9
    with pytest.raises(GrowthError, match=r"alpha=0\.9.*0\.793701"):
        katz_sparse(adj, alpha=0.9)
    with pytest.raises(GrowthError, match="alpha"):
        katz_sparse(sp.csr_array(adj), alpha=1 / rho)
    x = katz_sparse(adj, alpha=0.5)
    graph = nx.from_numpy_array(adj, create_using=nx.DiGraph)
    ref = nx.katz_centrality(graph, alpha=0.5, beta=1.0, weight="weight", tol=1e-12)
    assert np.abs(x - np.array([ref[i] for i in range(4)])).max() <= 1e-6
    out = katz_sparse(adj.T, alpha=0.5)  # out-influence: the reversed graph
    ref = nx.katz_centrality(graph.reverse(), alpha=0.5, beta=1.0, weight="weight", tol=1e-12)
    assert np.abs(out - np.array([ref[i] for i in range(4)])).max() <= 1e-6


def test_spectral_radius_of_dags_and_of_a_large_cycle() -> None:
    net = _net([5, 6, 4, 3], skips=True)
    adj, offsets = network_adjacency(net)
    assert offsets == [0, 5, 11, 15, 18] and spectral_radius(adj) == 0.0
    rng = np.random.default_rng(0)
    dense = (rng.random((150, 150)) < 0.05) * rng.random((150, 150))  # above DENSE_EIG_MAX: ARPACK path
    expected = float(np.abs(np.linalg.eigvals(dense)).max())
    assert abs(spectral_radius(sp.csr_array(dense)) - expected) <= 1e-6 * expected


def test_ten_thousand_units() -> None:
    g = torch.Generator().manual_seed(0)
    net = Network([64, *[1000] * 10, 10], generator=g)
    for block in net.layers[1:-1]:
        block.mask = (torch.rand(block.weight.shape, generator=g) < 0.02).float()
    net._changed()
    fast = katz_centrality(net, alpha=0.1)
    slow = katz_centrality(net, alpha=0.1, method="sparse")
    assert sum(p.numel() for p in fast) == 10_074
    assert all(torch.isfinite(p).all() for p in fast)
    assert max(float((a - b).abs().max()) for a, b in zip(fast, slow)) <= 1e-9


# ------------------------------------------------------------------------------- growth rule
def _grow(rule: KatzGrowth, net: Network) -> list[Any]:
    return rule.grow(net, Signals(net, frozenset()), torch.Generator().manual_seed(0))


@pytest.mark.parametrize("influence", ["in", "out"])
def test_katz_growth_splits_the_most_central_unit_of_each_layer(influence: str) -> None:
    net = _net([6, 10, 8, 3], activation="tanh")
    with torch.no_grad():
        if influence == "in":  # (1, 3) and (2, 5) have by far the largest incoming weights
            net.layers[0].weight[3] *= 50
            net.layers[1].weight[5] *= 50
        else:  # (1, 7) and (2, 2) have by far the largest outgoing weights
            net.layers[1].weight[:, 7] *= 50
            net.layers[2].weight[:, 2] *= 50
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = net.forward(x)
    events = _grow(KatzGrowth(operator="split", top_fraction=0.1, influence=influence), net)
    expected = [(1, (3,)), (2, (5,))] if influence == "in" else [(1, (7,)), (2, (2,))]
    assert [(e.layer, e.source_units) for e in events] == expected
    assert net.widths == [6, 11, 9, 3] and all(e.operation == "add_units:split" for e in events)
    with torch.no_grad():
        scale = max(1.0, float(before.abs().max()))  # outputs reach ~15 here: float32 rounding is relative
        assert float((net.forward(x) - before).abs().max()) <= 1e-6 * scale
    assert events[0].details["selector"] == {"influence": influence, "alpha": 0.1}


def test_katz_highway_routes_central_to_peripheral_units() -> None:
    net = _net([6, 10, 8, 9, 3], activation="tanh")
    with torch.no_grad():
        net.layers[0].weight[3] *= 50  # (1, 3): most central in layer 1
        net.layers[2].weight[4] *= 1e-3  # (3, 4): least central in layer 3
    events = _grow(KatzGrowth(operator="highway", top_fraction=0.1), net)
    assert [e.operation for e in events] == ["add_skip:zero", "highway"]
    assert events[1].details["routes"] == [[3, 4]] and events[1].layer == 3
    mask = net.skips[(1, 3)].mask
    assert mask is not None and torch.nonzero(mask).tolist() == [[4, 3]]


class TestKatzConformance(GrowthRuleConformance):
    hidden = (16, 16, 16)

    @pytest.fixture
    def principle_class(self) -> type:
        return KatzGrowth

    @pytest.fixture(params=[{}, {"operator": "highway", "influence": "out", "route_init": 0.5}])
    def config(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        return dict(request.param)
