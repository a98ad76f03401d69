"""Tests of ParamRemap and migrate_optimizer: optimizer state follows the network through growth."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from principlelab.core.network import Network, ParamRemap
from principlelab.core.optim import _pad_into, migrate_optimizer

WIDTHS = [5, 4, 6, 3]
MakeOpt = Callable[[list[torch.Tensor]], torch.optim.Optimizer]

OPTIMIZERS: dict[str, MakeOpt] = {
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, foreach=False),
    "adamw-amsgrad": lambda ps: torch.optim.AdamW(ps, lr=0.01, amsgrad=True, foreach=False),
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, foreach=False),
}


def _net(seed: int = 0, *, masked: bool = False) -> Network:
    g = torch.Generator().manual_seed(seed)
    net = Network(WIDTHS, activation="relu", generator=g)
    net.add_skip(1, 3)
    with torch.no_grad():
        net.skips[(1, 3)].weight.copy_(torch.randn(3, 4, generator=g) * 0.3)
    if masked:
        for blk in net.layers:
            blk.mask = (torch.rand(blk.weight.shape, generator=g) < 0.7).float()
        net._changed()
    net.pop_param_remap()
    return net


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)


def _step(net: Network, opt: torch.optim.Optimizer, steps: int = 1) -> None:
    x, y = _batch()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def _state_copy(opt: torch.optim.Optimizer) -> dict[int, dict[str, torch.Tensor]]:
    return {id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
            for p, s in opt.state.items()}


def _check_migrated(opt: torch.optim.Optimizer, net: Network, old_params: list[torch.Tensor],
                    old_state: dict[int, dict[str, torch.Tensor]], remap: ParamRemap, steps: int) -> None:
    params = net.parameters()
    group = opt.param_groups[0]["params"]
    assert len(group) == len(params) and all(p is q for p, q in zip(group, params))
    alive = {id(p) for p in params}
    assert all(id(p) in alive for p in opt.state)  # no stale state for replaced tensors
    added = {id(t) for t in remap.added}
    for old in old_params:
        new = remap.new_for(old)
        assert id(new) in alive
        assert id(new) not in added
        state = opt.state[new]
        before = old_state[id(old)]
        assert set(state) == set(before)
        for key, value in before.items():
            got = state[key]
            if key == "step":
                assert float(got) == float(value) == steps
                continue
            assert got.shape == new.shape and got.dtype == value.dtype
            lead = tuple(slice(0, n) for n in value.shape)
            torch.testing.assert_close(got[lead], value, atol=0, rtol=0)
            rest = got.clone()
            rest[lead] = 0
            assert bool((rest == 0).all()), f"{key}: new entries must start at zero"
    for p in params:
        if id(p) in added:
            assert p not in opt.state or not opt.state[p]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("masked", [False, True])
def test_migrate_after_split_add_layer_and_skip(name: str, masked: bool) -> None:
    net = _net(masked=masked)
    opt = OPTIMIZERS[name](net.parameters())
    _step(net, opt, steps=3)
    old_params = net.parameters()
    old_state = _state_copy(opt)
    assert len(old_state) == len(old_params)

    x, _ = _batch()
    before = net(x).detach().clone()
    net.add_units(1, init="split", source_units=[0, 3], noise=0.1, generator=torch.Generator().manual_seed(2))
    net.add_layer(2)
    net.add_skip(0, 2)
    torch.testing.assert_close(net(x), before, atol=1e-6, rtol=0)
    remap = net.pop_param_remap()
    replaced = [old for old in old_params if remap.new_for(old) is not old]
    assert len(replaced) == 4  # layer-0 weight+bias, layer-1 weight, skip 1->3 weight
    assert len(remap.added) == 3  # identity layer weight+bias, skip 0->2 weight

    migrate_optimizer(opt, remap, net.parameters())
    _check_migrated(opt, net, old_params, old_state, remap, steps=3)

    snapshot = [p.detach().clone() for p in net.parameters()]
    _step(net, opt)
    for p, q in zip(net.parameters(), snapshot):
        assert (p.detach() - q).abs().max() > 0, f"parameter of shape {tuple(p.shape)} did not move"
    assert net.layers[0].weight.shape == (6, 5)
    new_rows = net.layers[0].weight.detach()[4:] - snapshot[0][4:]
    assert new_rows.abs().max() > 0
    for p in net.parameters():
        assert opt.state.get(p)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_migrate_chain_same_layer_grown_twice(name: str) -> None:
    net = _net()
    opt = OPTIMIZERS[name](net.parameters())
    _step(net, opt, steps=2)
    old_params = net.parameters()
    old_state = _state_copy(opt)
    first_w0 = net.layers[0].weight
    net.add_units(1, 2, init="split", source_units=[0, 1])
    middle_w0 = net.layers[0].weight
    net.add_units(1, 1, init="clone", source_units=[5])
    assert net.widths[1] == 7
    remap = net.pop_param_remap()
    assert remap.new_for(first_w0) is net.layers[0].weight
    assert remap.new_for(middle_w0) is middle_w0  # intermediate tensors are not origins
    assert all(origin is not middle_w0 for origin, _ in remap.replaced.values())
    migrate_optimizer(opt, remap, net.parameters())
    _check_migrated(opt, net, old_params, old_state, remap, steps=2)
    _step(net, opt)


def test_chain_through_an_added_tensor() -> None:
    net = _net()
    opt = OPTIMIZERS["adamw"](net.parameters())
    _step(net, opt, steps=2)
    net.add_skip(0, 2)
    first_skip = net.skips[(0, 2)].weight
    net.add_units(2, 2)  # grows the brand-new skip's rows
    remap = net.pop_param_remap()
    assert any(t is net.skips[(0, 2)].weight for t in remap.added)
    assert not any(t is first_skip for t in remap.added)
    assert all(new is not net.skips[(0, 2)].weight for _, new in remap.replaced.values())
    migrate_optimizer(opt, remap, net.parameters())
    assert net.skips[(0, 2)].weight not in opt.state
    _step(net, opt)
    assert opt.state[net.skips[(0, 2)].weight]["exp_avg"].shape == (8, 5)


def test_migrate_without_state_and_with_empty_remap() -> None:
    net = _net()
    opt = OPTIMIZERS["sgd-momentum"](net.parameters())
    net.add_units(2, 1)  # before any step: no state to carry
    migrate_optimizer(opt, net.pop_param_remap(), net.parameters())
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], net.parameters()))
    assert not opt.state
    _step(net, opt, steps=2)
    state = _state_copy(opt)
    migrate_optimizer(opt, net.pop_param_remap(), net.parameters())
    for p in net.parameters():
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], state[id(p)]["momentum_buffer"])


def test_migrate_includes_extra_params() -> None:
    net = _net()
    head = torch.zeros(3, requires_grad=True)
    opt = OPTIMIZERS["adamw"]([*net.parameters(), head])
    x, y = _batch()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x) + head, y).backward()
    opt.step()
    net.add_units(1, 1)
    migrate_optimizer(opt, net.pop_param_remap(), [*net.parameters(), head])
    assert opt.param_groups[0]["params"][-1] is head
    assert opt.state[head]["exp_avg"].shape == (3,)


def test_migrate_rejects_many_param_groups() -> None:
    net = _net()
    params = net.parameters()
    opt = torch.optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1)
    with pytest.raises(AssertionError):
        migrate_optimizer(opt, ParamRemap(), params)


def test_pad_into() -> None:
    old = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    new = _pad_into(old, torch.Size([4, 5]))
    assert new.dtype == torch.float64 and new.shape == (4, 5) and new.device == old.device
    torch.testing.assert_close(new[:2, :3], old)
    assert new.sum() == old.sum()


def test_param_remap_record_and_new_for() -> None:
    remap = ParamRemap()
    assert not remap
    a, b, c = torch.zeros(2), torch.zeros(3), torch.zeros(4)
    remap.record(a, b)
    remap.record(b, c)  # chain keeps the origin
    assert remap.new_for(a) is c and remap.new_for(b) is b
    assert list(remap.replaced.values()) == [(a, c)]
    fresh, grown = torch.zeros(1), torch.zeros(2)
    remap.added.append(fresh)
    remap.record(fresh, grown)
    assert remap.added == [grown] and remap.new_for(fresh) is fresh
    assert remap


def test_migrate_drops_state_of_params_no_longer_trained() -> None:
    net = _net()
    head = torch.zeros(3, requires_grad=True)
    opt = OPTIMIZERS["sgd-momentum"]([*net.parameters(), head])
    x, y = _batch()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x) + head, y).backward()
    opt.step()
    assert head in opt.state
    migrate_optimizer(opt, net.pop_param_remap(), net.parameters())
    assert head not in opt.state
    assert len(opt.state) == len(net.parameters())
