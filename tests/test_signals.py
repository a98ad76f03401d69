"""Tests of the shared signals: per-unit activation statistics, losses, gradient norms, caching."""

from __future__ import annotations

import math

import pytest
import torch

from principlelab.core.network import Network
from principlelab.core.signals import KNOWN_SIGNALS, Signals, layer_stats
from principlelab.errors import ConfigError


def _net(activation: str = "relu", seed: int = 0) -> Network:
    return Network([5, 4, 6, 3], activation=activation, generator=torch.Generator().manual_seed(seed))


def _x(n: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ layer_stats
def test_tanh_saturation_and_dead() -> None:
    b = 10
    a = torch.zeros(b, 5)
    a[:, 0] = 1.0  # pinned at +1
    a[:, 1] = -1.0  # pinned at -1
    a[:, 2] = torch.linspace(-0.5, 0.5, b)
    a[:, 3] = torch.tensor([1.0] * 5 + [0.0] * 5)  # saturated half the time
    a[:, 4] = 0.97  # within eps * span (0.1) of +1
    st = layer_stats(2, a, "tanh")
    assert st.layer == 2
    torch.testing.assert_close(st.saturated, torch.tensor([1.0, 1.0, 0.0, 0.5, 1.0]))
    torch.testing.assert_close(st.dead, torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(st.mean, a.mean(0))
    torch.testing.assert_close(st.max_abs, torch.tensor([1.0, 1.0, 0.5, 1.0, 0.97]))
    tight = layer_stats(2, a, "tanh", eps=0.01)
    assert float(tight.saturated[4]) == 0.0


def test_sigmoid_saturates_at_both_tails() -> None:
    a = torch.zeros(6, 4)
    a[:, 0] = 1.0
    a[:, 1] = 0.0
    a[:, 2] = 0.5
    a[:, 3] = torch.tensor([0.01, 0.99, 0.5, 0.5, 0.5, 0.5])
    st = layer_stats(1, a, "sigmoid")
    torch.testing.assert_close(st.saturated, torch.tensor([1.0, 1.0, 0.0, 2 / 6]))
    torch.testing.assert_close(st.dead, torch.tensor([0.0, 1.0, 0.0, 0.0]))


def test_relu_dead_and_saturated_units() -> None:
    a = torch.tensor([
        [0.0, 2.0, 0.5, 0.0],
        [0.0, 1.0, 0.5, 3.0],
        [0.0, 3.0, 0.5, 0.0],
        [0.0, 0.0, 0.5, 0.0],
    ])
    st = layer_stats(1, a, "relu")
    torch.testing.assert_close(st.dead, torch.tensor([1.0, 0.25, 0.0, 0.75]))
    # ReLU has no upper bound: "saturated" means near the batch maximum (3.0)
    torch.testing.assert_close(st.saturated, torch.tensor([0.0, 0.25, 0.0, 0.25]))
    all_dead = layer_stats(1, torch.zeros(4, 3), "relu")
    torch.testing.assert_close(all_dead.dead, torch.ones(3))
    torch.testing.assert_close(all_dead.saturated, torch.zeros(3))


def test_dead_eps() -> None:
    a = torch.full((3, 2), 1e-3)
    assert float(layer_stats(1, a, "relu").dead[0]) == 0.0
    assert float(layer_stats(1, a, "relu", dead_eps=1e-2).dead[0]) == 1.0


@pytest.mark.parametrize(("width", "percentile", "k"),
                         [(20, 10.0, 2), (20, 5.0, 1), (3, 5.0, 1), (10, 30.0, 3)])
def test_top_and_bottom_percentiles(width: int, percentile: float, k: int) -> None:
    g = torch.Generator().manual_seed(width)
    means = torch.randperm(width, generator=g).float()
    a = means.expand(4, width) + torch.tensor([[-0.1], [0.1], [-0.1], [0.1]])
    st = layer_stats(1, a, "relu", percentile=percentile)
    assert st.top.dtype == torch.bool and st.bottom.dtype == torch.bool
    assert int(st.top.sum()) == int(st.bottom.sum()) == k
    highest = set(torch.topk(means, k).indices.tolist())
    lowest = set(torch.topk(-means, k).indices.tolist())
    assert set(st.top.nonzero().flatten().tolist()) == highest
    assert set(st.bottom.nonzero().flatten().tolist()) == lowest


def test_layer_stats_ignores_autograd() -> None:
    a = torch.rand(4, 3, requires_grad=True)
    st = layer_stats(1, a * 2, "sigmoid")
    assert not st.mean.requires_grad


# ----------------------------------------------------------------------------- Signals
def test_unknown_signal_rejected() -> None:
    with pytest.raises(AssertionError, match="bogus"):
        Signals(_net(), frozenset({"bogus"}))
    assert {"loss", "grad_norms", "activation_stats"} == KNOWN_SIGNALS
    assert Signals(_net(), frozenset({"grad_norms"})).wants_grad_norms
    assert not Signals(_net()).wants_grad_norms


def test_reading_undeclared_grad_norms_is_an_error_not_an_empty_list() -> None:
    with pytest.raises(ConfigError, match="no principle of this run declares 'grad_norms'"):
        Signals(_net()).grad_norms  # noqa: B018
    assert Signals(_net(), frozenset({"grad_norms"})).grad_norms == []


def test_record_step_losses_and_epochs() -> None:
    s = Signals(_net())
    assert math.isnan(s.last_loss) and s.losses == []
    s.record_step(torch.tensor(2.0), 8, 100)
    s.record_step(torch.tensor(4.0), 6, 80)
    assert s.step == 2 and s.samples_seen == 14 and s.train_macs == 180
    assert s.last_loss == 4.0
    assert s.close_epoch() == pytest.approx(3.0)
    assert s.last_loss == 4.0
    s.record_step(torch.tensor(1.0), 8, 100)
    assert s.last_loss == 1.0
    assert s.close_epoch() == pytest.approx(1.0)
    assert s.losses == pytest.approx([2.0, 4.0, 1.0])
    assert s.epoch_train_losses == pytest.approx([3.0, 1.0])
    s.eval_macs += 50
    assert s.total_macs == 330
    assert math.isnan(s.close_epoch())  # an epoch with no steps


def test_close_epoch_after_reading_losses_mid_epoch() -> None:
    s = Signals(_net())
    s.record_step(torch.tensor(1.0), 4, 10)
    s.close_epoch()
    s.record_step(torch.tensor(2.0), 4, 10)
    assert s.losses == pytest.approx([1.0, 2.0])  # a principle reads the history mid-epoch
    s.record_step(torch.tensor(6.0), 4, 10)
    _ = s.losses
    assert s.close_epoch() == pytest.approx(4.0)
    assert s.epoch_train_losses == pytest.approx([1.0, 4.0])


def test_close_epoch_reports_divergence() -> None:
    s = Signals(_net())
    s.record_step(torch.tensor(1.0), 4, 10)
    s.record_step(torch.tensor(float("inf")), 4, 10)
    assert not math.isfinite(s.close_epoch())


def test_record_grad_norms_matches_grads() -> None:
    net = _net()
    s = Signals(net, frozenset({"grad_norms"}))
    expected = []
    for seed in range(3):
        for p in net.parameters():
            p.grad = None
        net(_x(seed=seed)).pow(2).sum().backward()
        s.record_grad_norms(net)
        expected.append([float(b.weight.grad.norm()) for b in net.layers])  # type: ignore[union-attr]
    assert len(s.grad_norms) == 3
    for got, want in zip(s.grad_norms, expected):
        assert got == pytest.approx(want, rel=1e-6)
    for p in net.parameters():
        p.grad = None
    s.record_grad_norms(net)
    assert s.grad_norms[-1] == [0.0, 0.0, 0.0]


def test_grad_norms_follow_add_layer_within_an_epoch() -> None:
    net = _net()
    s = Signals(net, frozenset({"grad_norms"}))
    net(_x()).sum().backward()
    s.record_grad_norms(net)
    net.add_layer(1)
    net(_x()).sum().backward()
    s.record_grad_norms(net)
    norms = s.grad_norms
    assert [len(n) for n in norms] == [3, 4]
    assert norms[1] == pytest.approx([float(b.weight.grad.norm()) for b in net.layers], rel=1e-6)  # type: ignore[union-attr]


def test_activation_stats_cached_per_step() -> None:
    net = _net("tanh")
    s = Signals(net, frozenset({"activation_stats"}))
    net(_x())
    first = s.activation_stats()
    assert len(first) == 2 and [st.layer for st in first] == [1, 2]
    assert first[0].mean.shape == (4,) and first[1].mean.shape == (6,)
    torch.testing.assert_close(first[1].mean, net.hidden[1].mean(0))
    assert s.activation_stats() is first  # cached within the step
    net(_x(seed=7))  # a new batch without a new step: still the step's cached stats
    assert s.activation_stats() is first
    s.record_step(torch.tensor(1.0), 8, 10)
    second = s.activation_stats()
    assert second is not first
    torch.testing.assert_close(second[0].mean, net.hidden[0].mean(0))
    assert s.activation_stats() is second
    other = s.activation_stats(percentile=50.0)  # different settings are computed afresh
    assert other is not second and int(other[1].top.sum()) == 3


def test_activation_stats_recomputed_after_growth() -> None:
    net = _net()
    s = Signals(net, frozenset({"activation_stats"}))
    net(_x())
    before = s.activation_stats()
    net.add_units(1, 2)
    net(_x())
    after = s.activation_stats()
    assert after is not before and after[0].mean.shape == (6,)
