"""Tests of the growth operations: add_units (every init), add_layer, add_skip, freeze, width caps."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from principlelab.core.network import ACTIVATIONS, Block, Network
from principlelab.errors import GrowthError
from tiny_networks import WIDTHS, tiny_inputs, tiny_net

BlockKey = tuple[str, Any]


def _net(activation: str = "relu", *, masked: bool = False, skips: bool = True, seed: int = 0,
         max_width: int | None = None) -> Network:
    return tiny_net(activation, masked=masked, skips=skips, seed=seed, max_width=max_width)


def _x(n: int = 16, seed: int = 1) -> torch.Tensor:
    return tiny_inputs(n, seed)


def _blocks(net: Network) -> dict[BlockKey, Block]:
    found: dict[BlockKey, Block] = {("L", i): blk for i, blk in enumerate(net.layers)}
    found.update({("S", key): blk for key, blk in net.skips.items()})
    return found


Saved = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def _clone_state(net: Network) -> dict[BlockKey, Saved]:
    return {key: (blk.weight.detach().clone(), None if blk.bias is None else blk.bias.detach().clone(),
                  None if blk.mask is None else blk.mask.clone()) for key, blk in _blocks(net).items()}


def _into(key: BlockKey, layer: int) -> bool:
    return (key[0] == "L" and key[1] == layer - 1) or (key[0] == "S" and key[1][1] == layer)


def _out_of(key: BlockKey, layer: int) -> bool:
    return (key[0] == "L" and key[1] == layer) or (key[0] == "S" and key[1][0] == layer)


def _assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=0, rtol=0)


# ------------------------------------------------------------------------------ add_units
INITS = [
    ("zero", {}),
    ("clone", {}),
    ("clone", {"scale": 0.5, "noise": 0.1}),
    ("split", {"noise": 0.0}),
    ("split", {"noise": 0.2}),
    ("relay", {}),
    ("relay", {"scale": 2.0}),
]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("skips", [False, True])
@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize(("init", "kwargs"), INITS, ids=[f"{i}-{k}" for i, k in INITS])
def test_add_units_preserves_function_and_structure(activation: str, masked: bool, skips: bool, layer: int,
                                                    init: str, kwargs: dict[str, float]) -> None:
    net = _net(activation, masked=masked, skips=skips)
    x = _x()
    before = net(x).detach().clone()
    old = _clone_state(net)
    params0, macs0, widths0 = net.num_params(), net.forward_macs(), list(net.widths)
    sources = [0, 2] if init != "zero" else None
    n = 2
    events = net.add_units(layer, n, init=init, source_units=sources,  # type: ignore[arg-type]
                           generator=torch.Generator().manual_seed(9), **kwargs)

    assert len(events) == 1
    ev = events[0]
    assert net.events[-1] is ev
    assert ev.operation == f"add_units:{init}" and ev.layer == layer and ev.units == n
    assert ev.source_units == (tuple(sources) if sources else ())
    assert ev.function_preserving is True
    torch.testing.assert_close(net(x), before, atol=1e-6, rtol=0)
    assert net.widths == [w + (n if k == layer else 0) for k, w in enumerate(widths0)]
    assert ev.params_delta == net.num_params() - params0
    assert ev.macs_delta == net.forward_macs() - macs0
    assert len(net.hidden) == 2 and net.hidden[layer - 1].shape == (16, widths0[layer] + n)

    grown_in = grown_out = 0
    for key, blk in _blocks(net).items():
        w_old, b_old, m_old = old[key]
        rows, cols = w_old.shape
        into, out_of = _into(key, layer), _out_of(key, layer)
        assert blk.weight.shape == (rows + (n if into else 0), cols + (n if out_of else 0))
        assert blk.weight.requires_grad and blk.weight.is_leaf
        if blk.mask is not None:
            assert m_old is not None and blk.mask.shape == blk.weight.shape
            assert set(blk.mask.unique().tolist()) <= {0.0, 1.0}
            _assert_same(blk.mask[:rows, :cols], m_old)
        else:
            assert m_old is None
        if b_old is not None:
            assert blk.bias is not None and blk.bias.shape == (blk.weight.shape[0],)
            _assert_same(blk.bias[:rows], b_old)
        if not into and not out_of:
            _assert_same(blk.weight, w_old)
            continue
        if into:
            grown_in += 1
            _assert_same(blk.weight[:rows], w_old)
            new_rows = blk.weight[rows:].detach()
            is_main = key[0] == "L"
            if init in ("clone", "split"):
                scale = kwargs.get("scale", 1.0) if init == "clone" else 1.0
                if kwargs.get("noise") and init == "clone":
                    assert not torch.equal(new_rows, w_old[sources] * scale)
                    torch.testing.assert_close(new_rows, w_old[sources] * scale, atol=0.5, rtol=0)
                else:
                    _assert_same(new_rows, w_old[sources] * scale)
                if b_old is not None:
                    assert blk.bias is not None
                    _assert_same(blk.bias[rows:].detach(), b_old[sources] * scale)
                if m_old is not None:
                    assert blk.mask is not None
                    _assert_same(blk.mask[rows:], m_old[sources])  # clone/split copy the source's mask row
            elif init == "relay" and is_main:
                onehot = torch.zeros(n, cols)
                onehot[torch.arange(n), torch.tensor(sources)] = 1.0
                _assert_same(new_rows, onehot * kwargs.get("scale", 1.0))
                if blk.mask is not None:
                    assert bool((blk.mask[rows:][onehot.bool()] == 1).all())  # relay mask has its one-hot
                assert blk.bias is not None and bool((blk.bias[rows:] == 0).all())
            elif init == "zero" and is_main:
                assert new_rows.abs().max() > 0  # fresh nn.Linear-like incoming weights
                assert new_rows.abs().max() <= 1 / cols**0.5
                assert blk.bias is not None and bool((blk.bias[rows:] == 0).all())
            else:  # skip edges into relay/zero units start at zero
                assert bool((new_rows == 0).all())
        if out_of:
            grown_out += 1
            new_cols = blk.weight[:, cols:].detach()
            if init == "split":
                assert sources is not None
                untouched = [c for c in range(cols) if c not in sources]
                _assert_same(blk.weight[:, untouched].detach(), w_old[:, untouched])
                noise = kwargs["noise"]
                for i, s in enumerate(sources):
                    kept, moved, orig = blk.weight[:, s].detach(), new_cols[:, i], w_old[:, s]
                    torch.testing.assert_close(kept + moved, orig, atol=1e-7, rtol=0)
                    nz = orig.abs() > 1e-4
                    r = moved[nz] / orig[nz]
                    assert r.numel() > 0
                    torch.testing.assert_close(r, r[0].expand_as(r), atol=1e-5, rtol=0)  # one ratio per unit
                    torch.testing.assert_close(kept[nz], orig[nz] * (1 - r[0]), atol=1e-6, rtol=0)
                    assert 0.5 - noise - 1e-6 <= float(r[0]) <= 0.5 + noise + 1e-6
                    if noise == 0:
                        assert float(r[0]) == pytest.approx(0.5, abs=1e-6)
                if m_old is not None:
                    assert blk.mask is not None
                    _assert_same(blk.mask[:, cols:], m_old[:, sources])
            else:
                _assert_same(blk.weight[:, :cols].detach(), w_old)
                assert bool((new_cols == 0).all())
                if init == "clone" and m_old is not None:
                    assert blk.mask is not None
                    _assert_same(blk.mask[:, cols:], m_old[:, sources])
    assert grown_in == (2 if skips and layer == 2 else 1)
    assert grown_out == (2 if skips and layer == 1 else 1)


@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize("skips", [False, True])
def test_add_units_counts_by_hand_dense(layer: int, skips: bool) -> None:
    net = _net(skips=skips)
    n = 3
    fan_in = sum(blk.weight.shape[1] for _, blk in net.blocks_into(layer))
    fan_out = sum(blk.weight.shape[0] for _, blk in net.blocks_out_of(layer))
    before = net.num_params()
    (ev,) = net.add_units(layer, n)
    assert ev.macs_delta == n * (fan_in + fan_out)
    assert ev.params_delta == n * (fan_in + fan_out + 1)
    assert net.num_params() == before + ev.params_delta
    assert net.num_hidden_units() == 10 + n


def test_split_same_unit_twice_divides_sequentially() -> None:
    net = _net("tanh", skips=True)
    x = _x()
    before = net(x).detach().clone()
    old = net.layers[1].weight.detach().clone()
    net.add_units(1, init="split", source_units=[1, 1], noise=0.2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(net(x), before, atol=1e-6, rtol=0)
    w = net.layers[1].weight.detach()
    torch.testing.assert_close(w[:, 1] + w[:, 4] + w[:, 5], old[:, 1], atol=1e-7, rtol=0)
    assert net.widths[1] == 6


def test_clone_noise_breaks_symmetry_but_keeps_function() -> None:
    net = _net(skips=False)
    x = _x()
    before = net(x).detach().clone()
    net.add_units(2, init="clone", source_units=[3], noise=0.3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net(x), before, atol=1e-6, rtol=0)
    assert not torch.equal(net.layers[1].weight[6], net.layers[1].weight[3])


def test_add_units_records_param_remap() -> None:
    net = _net(skips=True)
    old_in, old_out, old_skip = net.layers[0].weight, net.layers[1].weight, net.skips[(1, 3)].weight
    old_bias = net.layers[0].bias
    net.add_units(1, 1)
    remap = net.pop_param_remap()
    assert bool(remap)
    assert remap.new_for(old_in) is net.layers[0].weight
    assert remap.new_for(old_bias) is net.layers[0].bias
    assert remap.new_for(old_out) is net.layers[1].weight
    assert remap.new_for(old_skip) is net.skips[(1, 3)].weight
    untouched = net.layers[2].weight
    assert remap.new_for(untouched) is untouched
    assert not net.pop_param_remap()


# ------------------------------------------------------------------------------ width caps
def test_room_and_max_width() -> None:
    net = _net(skips=False, max_width=6)
    assert net.room(1) == 2 and net.room(2) == 0
    assert net.add_units(2, 1) == []
    assert net.widths == WIDTHS and net.events == []
    assert not net.pop_param_remap()
    (ev,) = net.add_units(1, 5)
    assert ev.units == 2 and net.widths[1] == 6 and net.room(1) == 0
    assert ev.params_delta == 2 * (5 + 1 + 6)
    assert net.add_units(1, 1, init="clone", source_units=[0]) == []
    assert net.widths[1] == 6


def test_room_truncates_sources() -> None:
    net = _net(skips=False, max_width=6)
    (ev,) = net.add_units(1, init="clone", source_units=[0, 1, 2])
    assert ev.units == 2 and ev.source_units == (0, 1)
    assert net.widths[1] == 6


def test_room_is_unbounded_without_cap() -> None:
    net = _net()
    assert net.room(1) >= 10**6


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("layer", [0, 3, -1, 9])
def test_growth_on_non_hidden_layer_raises(layer: int) -> None:
    net = _net()
    with pytest.raises(GrowthError, match=rf"layer {layer}\b"):
        net.add_units(layer, 1)
    with pytest.raises(GrowthError, match=rf"layer {layer}\b"):
        net.room(layer)
    with pytest.raises(GrowthError, match=rf"layer {layer}\b"):
        net.freeze(layer, [0])
    assert net.widths == WIDTHS


@pytest.mark.parametrize(("init", "layer", "bad"), [
    ("clone", 1, 4), ("split", 2, 6), ("clone", 1, -1), ("relay", 2, 4), ("relay", 1, 5), ("split", 1, 17)])
def test_out_of_range_sources_raise(init: str, layer: int, bad: int) -> None:
    net = _net()
    with pytest.raises(GrowthError, match=rf"\[{bad}\]"):
        net.add_units(layer, init=init, source_units=[0, bad])  # type: ignore[arg-type]
    assert net.widths == WIDTHS and not net.pop_param_remap()


def test_relay_source_indexes_previous_layer() -> None:
    net = _net()
    net.add_units(2, init="relay", source_units=[3])  # layer 1 has 4 units: 3 is fine
    assert net.widths[2] == 7


def test_missing_sources_and_bad_n_raise() -> None:
    net = _net()
    for init in ("clone", "split", "relay"):
        with pytest.raises(GrowthError, match=init):
            net.add_units(1, init=init)  # type: ignore[arg-type]
    with pytest.raises(GrowthError, match="0"):
        net.add_units(1, 0)
    with pytest.raises(GrowthError, match="-2"):
        net.add_units(1, -2)


# ------------------------------------------------------------------------------ add_layer
@pytest.mark.parametrize("after", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("skips", [False, True])
def test_add_layer_relu_preserves(after: int, masked: bool, skips: bool) -> None:
    net = _net("relu", masked=masked, skips=skips)
    x = _x()
    before = net(x).detach().clone()
    params0 = net.num_params()
    macs0 = net.forward_macs()
    (ev,) = net.add_layer(after)
    width = WIDTHS[after]
    assert ev.function_preserving is True
    assert ev.operation == "add_layer:identity" and ev.layer == after + 1 and ev.units == width
    assert net.widths == [*WIDTHS[:after + 1], width, *WIDTHS[after + 1:]]
    assert net.depth == 4
    new = net.layers[after]
    _assert_same(new.weight.detach(), torch.eye(width))
    assert new.bias is not None and bool((new.bias == 0).all()) and new.mask is None
    torch.testing.assert_close(net(x), before, atol=1e-6, rtol=0)
    assert len(net.hidden) == 3
    assert ev.params_delta == width * width + width == net.num_params() - params0
    assert ev.macs_delta == width * width == net.forward_macs() - macs0
    remap = net.pop_param_remap()
    assert any(t is new.weight for t in remap.added) and any(t is new.bias for t in remap.added)
    assert any(p is new.weight for p in net.parameters())


@pytest.mark.parametrize("after", [0, 1, 2])
def test_add_layer_tanh_not_preserving(after: int) -> None:
    net = _net("tanh")
    x = _x()
    before = net(x).detach().clone()
    (ev,) = net.add_layer(after)
    assert ev.function_preserving is False
    assert (net(x) - before).abs().max() > 1e-4


def test_add_layer_after_input_is_not_preserving_even_with_relu() -> None:
    net = _net("relu")
    x = _x()
    before = net(x).detach().clone()
    (ev,) = net.add_layer(0)
    assert ev.function_preserving is False
    assert (net(x) - before).abs().max() > 1e-4  # relu clips the negative inputs


@pytest.mark.parametrize(("after", "expected"), [
    (0, {(0, 3), (2, 4)}), (1, {(0, 3), (1, 4)}), (2, {(0, 2), (1, 4)})])
def test_add_layer_shifts_skip_edges(after: int, expected: set[tuple[int, int]]) -> None:
    net = _net("relu")
    blocks = {key: blk for key, blk in net.skips.items()}
    x = _x()
    before = net(x).detach().clone()
    net.add_layer(after)
    assert set(net.skips) == expected
    shifted = {(a + (a > after), b + (b > after)): blk for (a, b), blk in blocks.items()}
    assert all(net.skips[key] is blk for key, blk in shifted.items())
    for (a, b), blk in net.skips.items():
        assert b >= a + 2
        assert blk.weight.shape == (net.widths[b], net.widths[a])
    if after >= 1:
        torch.testing.assert_close(net(x), before, atol=1e-6, rtol=0)


def test_add_layer_errors() -> None:
    net = _net()
    for after in (-1, 3):
        with pytest.raises(GrowthError, match=str(after)):
            net.add_layer(after)
    capped = _net(max_width=4)  # layer 2 already 6 wide (cap applies to growth of new layers)
    with pytest.raises(GrowthError, match="6"):
        capped.add_layer(2)
    capped.add_layer(1)
    assert capped.widths == [5, 4, 4, 6, 3]


# ------------------------------------------------------------------------------- add_skip
def _states(net: Network, x: torch.Tensor) -> list[torch.Tensor]:
    net(x)
    return [x, *[h.detach() for h in net.hidden]]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize(("src", "dst"), [(0, 2), (0, 3), (1, 3)])
def test_add_skip_zero_init_then_exact_contribution(activation: str, src: int, dst: int) -> None:
    net = _net(activation, skips=False)
    x = _x()
    before = net(x).detach().clone()
    params0 = net.num_params()
    (ev,) = net.add_skip(src, dst)
    assert ev.operation == "add_skip:zero" and ev.layer == dst and ev.function_preserving is True
    assert ev.details == {"src": src, "dst": dst}
    assert ev.params_delta == WIDTHS[src] * WIDTHS[dst] == net.num_params() - params0
    assert ev.macs_delta == WIDTHS[src] * WIDTHS[dst]
    blk = net.skips[(src, dst)]
    assert blk.bias is None and blk.mask is None and blk.weight.shape == (WIDTHS[dst], WIDTHS[src])
    torch.testing.assert_close(net(x), before, atol=1e-6, rtol=0)
    remap = net.pop_param_remap()
    assert remap.added == [blk.weight]

    states = _states(net, x)
    w = torch.randn(blk.weight.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        blk.weight.copy_(w)
    out = net(x)
    if dst == net.depth:  # into the (linear) output: the change is exactly h_src @ W.T
        torch.testing.assert_close(out - before, states[src] @ w.T, atol=1e-5, rtol=0)
    else:  # into a hidden layer: recompute that layer's activation and the rest by hand
        act = ACTIVATIONS[activation]
        z = states[dst - 1] @ net.layers[dst - 1].weight.T + net.layers[dst - 1].bias + states[src] @ w.T
        h = act(z)
        for i in range(dst, net.depth):
            h = h @ net.layers[i].weight.T + net.layers[i].bias
            if i < net.depth - 1:
                h = act(h)
        torch.testing.assert_close(out, h, atol=1e-5, rtol=0)
    assert (out - before).abs().max() > 1e-3


def test_add_skip_errors() -> None:
    net = _net(skips=True)
    with pytest.raises(GrowthError, match="already exists"):
        net.add_skip(0, 2)
    for src, dst in [(0, 1), (1, 2), (2, 2), (-1, 2), (1, 4), (2, 1)]:
        with pytest.raises(GrowthError, match=f"{src}->{dst}"):
            net.add_skip(src, dst)
    assert set(net.skips) == {(0, 2), (1, 3)}


def test_skip_grows_with_units() -> None:
    net = _net(skips=True)
    net.add_units(1, 2)
    net.add_units(2, 3)
    assert net.skips[(0, 2)].weight.shape == (9, 5)
    assert net.skips[(1, 3)].weight.shape == (3, 6)


# -------------------------------------------------------------------------------- freeze
def _adam_steps(net: Network, steps: int = 4, seed: int = 5) -> None:
    opt = torch.optim.AdamW(net.parameters(), lr=0.05, foreach=False)
    x = _x(seed=seed)
    for _ in range(steps):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
        net.restore_frozen()


@pytest.mark.parametrize("masked", [False, True])
def test_freeze_keeps_incoming_weights(masked: bool) -> None:
    net = _net(masked=masked, skips=True)
    frozen_units = [1, 3]
    (ev,) = net.freeze(2, frozen_units)
    assert ev.operation == "freeze" and ev.source_units == (1, 3) and ev.params_delta == 0
    net.freeze(1, [0])
    w_main, b_main = net.layers[1].weight.detach().clone(), net.layers[1].bias.detach().clone()
    w_skip = net.skips[(0, 2)].weight.detach().clone()
    w0, b0 = net.layers[0].weight.detach().clone(), net.layers[0].bias.detach().clone()
    _adam_steps(net)
    others = [0, 2, 4, 5]
    _assert_same(net.layers[1].weight[frozen_units].detach(), w_main[frozen_units])
    _assert_same(net.layers[1].bias[frozen_units].detach(), b_main[frozen_units])
    _assert_same(net.skips[(0, 2)].weight[frozen_units].detach(), w_skip[frozen_units])
    _assert_same(net.layers[0].weight[0].detach(), w0[0])
    _assert_same(net.layers[0].bias[0].detach(), b0[0])
    assert (net.layers[1].weight[others] - w_main[others]).abs().max() > 1e-3
    assert (net.layers[1].bias[others] - b_main[others]).abs().max() > 1e-3
    assert (net.skips[(0, 2)].weight[others] - w_skip[others]).abs().max() > 1e-3
    assert (net.layers[0].weight[1:] - w0[1:]).abs().max() > 1e-3
    assert (net.layers[2].weight - net.layers[2].weight.detach().clone()).abs().max() == 0


def test_freeze_accumulates_units() -> None:
    net = _net()
    net.freeze(1, [2])
    net.freeze(1, [0, 2])
    assert net.frozen[1].rows.tolist() == [0, 2]


@pytest.mark.parametrize("units", [[4], [0, 4], [-1], [1, -3]])
def test_freeze_out_of_range_raises(units: list[int]) -> None:
    net = _net()
    with pytest.raises(GrowthError, match="out of range"):
        net.freeze(1, units)
    assert not net.frozen


def test_freeze_survives_growing_the_frozen_layer() -> None:
    net = _net(skips=True)
    net.freeze(2, [0])
    net.add_units(2, 2, init="clone", source_units=[0, 1])
    w = net.layers[1].weight.detach().clone()
    _adam_steps(net)
    _assert_same(net.layers[1].weight[0].detach(), w[0])
    assert (net.layers[1].weight[6:] - w[6:]).abs().max() > 1e-3  # the clones themselves are trainable


@pytest.mark.parametrize("init", ["zero", "split", "relay"])
def test_freeze_survives_growing_the_layer_below(init: str) -> None:
    net = _net(skips=True)
    x = _x()
    net.freeze(2, [0, 5])
    before = net(x).detach().clone()
    sources = None if init == "zero" else [0, 1]
    net.add_units(1, 2, init=init, source_units=sources)  # type: ignore[arg-type]
    torch.testing.assert_close(net(x), before, atol=1e-6, rtol=0)
    net.restore_frozen()  # restoring right after growth must not undo the growth
    torch.testing.assert_close(net(x), before, atol=1e-6, rtol=0)
    w = net.layers[1].weight.detach().clone()
    assert w.shape == (6, 6)
    _adam_steps(net)
    _assert_same(net.layers[1].weight[[0, 5]].detach(), w[[0, 5]])
    assert (net.layers[1].weight[1:5] - w[1:5]).abs().max() > 1e-3


def test_freeze_survives_add_layer_below() -> None:
    net = _net(skips=True)
    net.freeze(2, [1])
    net.add_layer(1)
    assert set(net.frozen) == {3}
    w_main = net.layers[2].weight.detach().clone()
    w_skip = net.skips[(0, 3)].weight.detach().clone()
    _adam_steps(net)
    _assert_same(net.layers[2].weight[1].detach(), w_main[1])
    _assert_same(net.skips[(0, 3)].weight[1].detach(), w_skip[1])
    assert (net.layers[2].weight[0] - w_main[0]).abs().max() > 1e-3


def test_freeze_survives_add_layer_above() -> None:
    net = _net(skips=True)
    net.freeze(1, [2])
    net.add_layer(2)
    assert set(net.frozen) == {1}
    w = net.layers[0].weight.detach().clone()
    _adam_steps(net)
    _assert_same(net.layers[0].weight[2].detach(), w[2])


def test_freeze_covers_skip_added_later() -> None:
    net = _net(skips=False)
    net.freeze(2, [0])
    net.add_skip(0, 2)
    with torch.no_grad():
        net.skips[(0, 2)].weight.fill_(0.0)
    _adam_steps(net)
    assert bool((net.skips[(0, 2)].weight[0] == 0).all())
    assert net.skips[(0, 2)].weight[1:].abs().max() > 1e-3


def test_relay_with_zero_scale_keeps_its_mask_connection() -> None:
    net = _net(masked=True, skips=False)
    net.add_units(2, init="relay", source_units=[1, 3], scale=0.0)
    mask = net.layers[1].mask
    assert mask is not None
    assert mask[6, 1] == 1 and mask[7, 3] == 1
    assert bool((net.layers[1].weight[6:] == 0).all())
