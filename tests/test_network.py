"""Tests of the growable Network: forward, hidden activations, graph export, counts, copies, snapshots."""

from __future__ import annotations

import pytest
import torch

from principlelab.core.network import ACTIVATIONS, Block, Network
from tiny_networks import WIDTHS, tiny_inputs, tiny_net


def _net(activation: str = "relu", *, masked: bool = False, skips: bool = False, seed: int = 0,
         max_width: int | None = None) -> Network:
    return tiny_net(activation, masked=masked, skips=skips, seed=seed, max_width=max_width)


def _x(n: int = 7, seed: int = 1) -> torch.Tensor:
    return tiny_inputs(n, seed)


def _reference(net: Network, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward pass written out by hand: (output, hidden post-activations)."""
    act = ACTIVATIONS[net.activation]
    states = [x]
    for i, blk in enumerate(net.layers):
        w = blk.weight if blk.mask is None else blk.weight * blk.mask
        z = states[i] @ w.T + (0 if blk.bias is None else blk.bias)
        for (a, b), skip in net.skips.items():
            if b == i + 1:
                sw = skip.weight if skip.mask is None else skip.weight * skip.mask
                z = z + states[a] @ sw.T
        if i == net.depth - 1:
            return z, states[1:]
        states.append(act(z))
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("skips", [False, True])
def test_forward_matches_reference_and_keeps_hidden(activation: str, masked: bool, skips: bool) -> None:
    net = _net(activation, masked=masked, skips=skips)
    x = _x()
    out = net(x)
    assert out.shape == (7, WIDTHS[-1])
    assert len(net.hidden) == net.depth - 1 == 2
    for k, h in enumerate(net.hidden, start=1):
        assert h.shape == (7, WIDTHS[k])
    ref_out, ref_hidden = _reference(net, x)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=0)
    for h, r in zip(net.hidden, ref_hidden):
        torch.testing.assert_close(h, r, atol=1e-6, rtol=0)


def test_forward_without_hidden_layers() -> None:
    net = Network([3, 2], generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 3)
    out = net(x)
    assert out.shape == (4, 2)
    assert net.hidden == []
    torch.testing.assert_close(out, x @ net.layers[0].weight.T + net.layers[0].bias)


def test_skips_change_the_output() -> None:
    plain, skipped = _net(skips=False), _net(skips=True)
    x = _x()
    assert (plain(x) - skipped(x)).abs().max() > 1e-3


def test_mask_zeroes_connections_in_forward() -> None:
    net = _net()
    x = _x()
    before = net(x)
    net.layers[-1].mask = torch.zeros_like(net.layers[-1].weight)
    out = net(x)
    torch.testing.assert_close(out, net.layers[-1].bias.expand_as(out))
    assert (before - out).abs().max() > 1e-3


def test_forward_gradients_reach_every_parameter() -> None:
    net = _net(skips=True)
    net(_x()).sum().backward()
    for p in net.parameters():
        assert p.grad is not None and p.grad.shape == p.shape


def test_parameters_order() -> None:
    net = _net(skips=True)
    params = net.parameters()
    expected = [t for blk in net.layers for t in (blk.weight, blk.bias)]
    expected += [net.skips[(0, 2)].weight, net.skips[(1, 3)].weight]
    assert len(params) == len(expected)
    assert all(p is e for p, e in zip(params, expected))
    assert all(p.requires_grad and p.is_leaf for p in params)


def test_blocks_into_and_out_of() -> None:
    net = _net(skips=True)
    assert [(a, blk) for a, blk in net.blocks_into(2)] == [(1, net.layers[1]), (0, net.skips[(0, 2)])]
    assert net.blocks_into(1) == [(0, net.layers[0])]
    assert net.blocks_out_of(1) == [(2, net.layers[1]), (3, net.skips[(1, 3)])]
    assert net.blocks_out_of(3) == []
    assert list(net.hidden_layers) == [1, 2]
    assert net.depth == 3


# ---------------------------------------------------------------------------------- to_graph
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("skips", [False, True])
def test_to_graph_edges_match_weights(masked: bool, skips: bool) -> None:
    net = _net(masked=masked, skips=skips)
    with torch.no_grad():  # an exact zero with the mask on must not become an edge either
        net.layers[0].weight[0, 0] = 0.0
        if net.layers[0].mask is not None:
            net.layers[0].mask[0, 0] = 1.0
    graph = net.to_graph()
    assert graph.number_of_nodes() == sum(WIDTHS)
    assert set(graph.nodes) == {(k, j) for k, w in enumerate(WIDTHS) for j in range(w)}
    assert all(graph.nodes[(k, j)]["layer"] == k for k, j in graph.nodes)

    expected: dict[tuple[tuple[int, int], tuple[int, int]], float] = {}
    blocks = [(i, i + 1, blk) for i, blk in enumerate(net.layers)]
    blocks += [(a, b, blk) for (a, b), blk in net.skips.items()]
    for a, b, blk in blocks:
        w = blk.weight.detach()
        mask = torch.ones_like(w) if blk.mask is None else blk.mask
        for r in range(w.shape[0]):
            for c in range(w.shape[1]):
                if mask[r, c] != 0 and w[r, c] != 0:
                    expected[((a, c), (b, r))] = abs(float(w[r, c]))
    assert set(graph.edges) == set(expected)
    for (u, v), weight in expected.items():
        assert graph.edges[u, v]["weight"] == pytest.approx(weight, abs=1e-7)
    assert ((0, 0), (1, 0)) not in graph.edges
    if skips:
        assert any(u[0] == 0 and v[0] == 2 for u, v in graph.edges)
        assert any(u[0] == 1 and v[0] == 3 for u, v in graph.edges)
    if masked:
        dense_edges = sum(blk.weight.numel() for _, _, blk in blocks)
        assert graph.number_of_edges() < dense_edges
        for a, b, blk in blocks:
            assert blk.mask is not None
            for r, c in (blk.mask == 0).nonzero().tolist():
                assert ((a, c), (b, r)) not in graph.edges


# ---------------------------------------------------------------------------------- counting
def test_counts_dense_by_hand() -> None:
    net = _net()
    assert net.num_params() == 5 * 4 + 4 + 4 * 6 + 6 + 6 * 3 + 3 == 75
    assert net.forward_macs() == 5 * 4 + 4 * 6 + 6 * 3 == 62
    assert net.num_hidden_units() == 10


def test_counts_with_skips_by_hand() -> None:
    net = _net(skips=True)
    assert net.num_params() == 75 + 5 * 6 + 4 * 3 == 117
    assert net.forward_macs() == 62 + 30 + 12 == 104


def test_counts_with_masks_and_skips_by_hand() -> None:
    net = _net(masked=True, skips=True)
    active = sum(int(blk.mask.sum()) for blk in [*net.layers, *net.skips.values()] if blk.mask is not None)
    assert 0 < active < 104
    assert net.forward_macs() == active
    assert net.num_params() == active + 4 + 6 + 3


def test_counts_follow_mask_changes_after_changed() -> None:
    net = _net()
    assert net.forward_macs() == 62
    net.layers[0].mask = torch.zeros(4, 5)
    net.layers[0].mask[0, :2] = 1.0
    net._changed()
    assert net.forward_macs() == 2 + 24 + 18
    assert net.num_params() == 2 + 24 + 18 + 13


def test_block_helpers() -> None:
    blk = Block(torch.arange(6.0).reshape(2, 3), torch.zeros(2), torch.tensor([[1.0, 0, 1], [0, 0, 1]]))
    assert blk.active_weights() == 3
    torch.testing.assert_close(blk.effective_weight(), torch.tensor([[0.0, 0, 2], [0, 0, 5]]))
    assert len(blk.tensors()) == 2
    dense = Block(torch.ones(2, 3))
    assert dense.active_weights() == 6 and dense.tensors() == [dense.weight]


def test_describe_mentions_structure() -> None:
    text = _net(skips=True).describe()
    assert "[5, 4, 6, 3]" in text and "0->2" in text and "1->3" in text and "117 params" in text


def test_bad_construction_raises() -> None:
    with pytest.raises(AssertionError):
        Network([5])
    with pytest.raises(AssertionError):
        Network([5, 0, 2])
    with pytest.raises(AssertionError):
        Network([5, 2], activation="gelu")


def test_init_is_reproducible_with_generator() -> None:
    a, b = _net(seed=3), _net(seed=3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    bound = 1 / 5**0.5
    assert a.layers[0].weight.abs().max() <= bound


# ------------------------------------------------------------------------- copy and snapshots
def _train(net: Network, steps: int = 3) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = _x(seed=5)
    for _ in range(steps):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("masked", [False, True])
def test_copy_is_independent(masked: bool) -> None:
    net = _net(masked=masked, skips=True)
    net.freeze(1, [0])
    x = _x()
    twin = net.copy()
    torch.testing.assert_close(twin(x), net(x), atol=0, rtol=0)
    for p, q in zip(net.parameters(), twin.parameters()):
        assert p is not q and p.data_ptr() != q.data_ptr()
        assert q.is_leaf and q.requires_grad and q.grad_fn is None
    for blk, tblk in zip(net.layers, twin.layers):
        if blk.mask is not None:
            assert tblk.mask is not None and tblk.mask is not blk.mask and torch.equal(tblk.mask, blk.mask)
    before = twin(x).detach().clone()
    _train(net)
    torch.testing.assert_close(twin(x), before, atol=0, rtol=0)
    # growing the twin leaves the original alone
    twin.add_units(1, 2)
    twin.add_skip(0, 3)
    assert net.widths == WIDTHS and twin.widths[1] == 6
    assert set(net.skips) == {(0, 2), (1, 3)}
    assert twin.frozen[1].rows is not net.frozen[1].rows
    assert len(net.events) < len(twin.events)


def test_copy_keeps_the_originals_hidden_activations() -> None:
    net = _net()
    net(_x())
    kept = list(net.hidden)
    net.copy()
    assert len(net.hidden) == 2 and all(a is b for a, b in zip(net.hidden, kept))


def test_snapshot_is_frozen_in_time_and_evaluable_alone() -> None:
    net = _net(skips=True)
    x = _x()
    expected = net(x).detach().clone()
    snap = net.take_snapshot(step=3, tag="early")
    assert snap.step == 3 and snap.tag == "early"
    assert net.snapshots[-1] is snap and snap.network.snapshots == []
    _train(net)
    assert (net(x) - expected).abs().max() > 1e-4
    torch.testing.assert_close(snap.network(x), expected, atol=0, rtol=0)
    alone = snap.network
    del net
    out = alone(x)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    assert len(alone.hidden) == 2


def test_snapshot_growth_op_records_event() -> None:
    net = _net()
    events = net.snapshot(step=7, tag="s")
    assert len(net.snapshots) == 1 and net.snapshots[0].step == 7
    assert events[0].operation == "snapshot" and events[0].details == {"tag": "s", "index": 0}
    assert events[0].params_delta == 0 and net.events[-1] is events[0]
    second = net.take_snapshot(step=8)
    assert second.network.snapshots == [] and len(net.snapshots) == 2
