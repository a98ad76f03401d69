"""Composition ``capsule_routing``: routing against a NumPy reference, margin loss, growth, learning."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from principlelab.core.network import Network
from principlelab.core.recipe import make_recipe
from principlelab.core.signals import Signals
from principlelab.core.tasks import load_task
from principlelab.core.trainer import Trainer
from principlelab.plugins.composition import capsule_routing
from principlelab.plugins.composition.capsule_routing import CapsuleRouting, squash
from principlelab.plugins.connectivity.dense import Dense
from principlelab.plugins.growth.none import NoGrowth
from principlelab.plugins.learning.backprop import Backprop
from principlelab.plugins.trigger.never import Never
from principlelab.testing import CompositionConformance

SMALL = {"primary_capsules": 3, "primary_dim": 4, "class_dim": 5}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def np_squash(s: np.ndarray) -> np.ndarray:
    n2 = (s**2).sum(-1, keepdims=True)
    return n2 / (1 + n2) * s / np.sqrt(n2)


def np_softmax(b: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(b - b.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def np_capsules(net: Network, comp: CapsuleRouting, x: torch.Tensor, iterations: int,
                uniform: bool = False) -> np.ndarray:
    """Class capsule lengths [B, C], computed from the weights in float64 NumPy (one hidden layer)."""
    w0, b0 = _np(net.layers[0].weight), _np(net.layers[0].bias)
    h = np.maximum(_np(x) @ w0.T + b0, 0.0)  # [B, W]
    n, d = comp.config.primary_capsules, comp.config.primary_dim
    u = np_squash((h @ _np(comp.proj).T + _np(comp.proj_bias)).reshape(len(h), n, d))  # [B, N, D]
    w = _np(comp.transforms)  # [N, C, K, D]
    u_hat = np.einsum("ncki,bni->bnck", w, u)  # [B, N, C, K]
    num_classes = w.shape[1]
    b = np.zeros(u_hat.shape[:3])  # [B, N, C]
    for _ in range(iterations):
        c = np_softmax(b, axis=2)  # coupling: softmax over the classes j of b_ij
        s = (c[..., None] * u_hat).sum(1)  # s_j = sum_i c_ij u_hat_j|i   [B, C, K]
        v = np_squash(s)
        b = b + (u_hat * v[:, None]).sum(-1)  # agreement update b_ij += u_hat_j|i . v_j
    c = np.full(b.shape, 1.0 / num_classes) if uniform else np_softmax(b, axis=2)
    v = np_squash((c[..., None] * u_hat).sum(1))
    return np.sqrt((v**2).sum(-1))


def _built(iterations: int, seed: int = 0) -> tuple[CapsuleRouting, Network]:
    gen = torch.Generator().manual_seed(seed)
    net = Network([7, 12, 4], generator=gen)
    comp = CapsuleRouting(SMALL, routing_iterations=iterations)
    comp.build(net, num_classes=4, generator=gen)
    return comp, net


@pytest.mark.parametrize("iterations", [1, 2])
def test_routing_matches_numpy_reference(iterations: int) -> None:
    comp, net = _built(iterations)
    x = torch.randn(6, 7, generator=torch.Generator().manual_seed(1))
    scores = comp.forward(net, x)
    assert scores.shape == (6, 4)
    np.testing.assert_allclose(_np(scores), np_capsules(net, comp, x, iterations), atol=1e-5)


def test_zero_iterations_is_uniform_coupling() -> None:
    comp, net = _built(0)
    x = torch.randn(6, 7, generator=torch.Generator().manual_seed(2))
    scores = _np(comp.forward(net, x))
    np.testing.assert_allclose(scores, np_capsules(net, comp, x, 0, uniform=True), atol=1e-5)
    routed, _ = _built(1)
    assert not np.allclose(scores, _np(routed.forward(net, x)), atol=1e-4), "routing had no effect"


def test_squash_keeps_direction_and_bounds_length() -> None:
    s = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.3, -0.4]])
    v = squash(s)
    np.testing.assert_allclose(_np(v.norm(dim=1)), [25 / 26, 0.0, 0.25 / 1.25], atol=1e-6)
    np.testing.assert_allclose(_np(v[0] / v[0].norm()), [0.6, 0.8], atol=1e-6)


def test_margin_loss_by_hand() -> None:
    comp = CapsuleRouting()
    scores = torch.tensor([[0.95, 0.3, 0.05], [0.5, 0.2, 0.85]])
    y = torch.tensor([0, 2])
    # sample 0: 0 + 0.5*(0.3-0.1)^2 + 0 = 0.02; sample 1: 0.5*0.4^2 + 0.5*0.1^2 + 0.05^2 = 0.0875
    assert comp.loss(scores, y).item() == pytest.approx((0.02 + 0.0875) / 2, abs=1e-7)
    other = CapsuleRouting(m_plus=0.8, m_minus=0.2, lam=1.0)
    # sample 0: (0.3-0.2)^2 = 0.01; sample 1: (0.5-0.2)^2 + 0 (0.2 is not above 0.2) + 0 (0.85 > 0.8)
    assert other.loss(scores, y).item() == pytest.approx((0.01 + 0.09) / 2, abs=1e-7)


@pytest.mark.parametrize("init", ["zero", "split", "clone"])
def test_growth_of_last_hidden_layer_preserves_scores(init: str) -> None:
    gen = torch.Generator().manual_seed(3)
    net = Network([7, 10, 12, 4], generator=gen)
    comp, rule = CapsuleRouting(SMALL), Backprop(lr=1e-2)
    comp.build(net, num_classes=4, generator=gen)
    rule.setup(net, comp)
    x = torch.randn(16, 7, generator=gen)
    y = torch.randint(4, (16,), generator=gen)
    signals = Signals(net)
    for _ in range(3):
        rule.step(net, comp, x, y, signals)
    with torch.no_grad():
        before = comp.forward(net, x)
    old_proj = comp.proj
    if init == "zero":
        net.add_units(2, 5, init="zero", generator=gen)
    else:
        net.add_units(2, init=init, source_units=[0, 3, 3], noise=0.05, generator=gen)
    remap = net.pop_param_remap()
    comp.on_growth(net, remap)
    rule.on_growth(net, comp, remap)
    assert comp.proj.shape == (12, net.widths[2]) and net.widths[2] > 12
    assert remap.new_for(old_proj) is comp.proj
    state = rule.optimizer.state[comp.proj]
    assert state["exp_avg"].shape == comp.proj.shape and state["exp_avg"][:, 12:].abs().sum() == 0
    with torch.no_grad():
        after = comp.forward(net, x)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    loss = rule.step(net, comp, x, y, signals)
    assert torch.isfinite(loss) and comp.proj.grad is not None


def test_growth_elsewhere_leaves_projection_alone() -> None:
    comp, net = _built(1)
    proj = comp.proj
    net.add_layer(0)  # a new first hidden layer; the last hidden layer keeps its width
    comp.on_growth(net, net.pop_param_remap())
    assert comp.proj is proj
    assert comp.forward(net, torch.randn(3, 7)).shape == (3, 4)


def test_registers_and_counts_macs() -> None:
    registered: list[type] = []
    capsule_routing.register_compositions(registered.append)
    assert registered == [CapsuleRouting]
    comp, net = _built(2)
    # projection 12*12, transforms 3*4*5*4, routing (2*2+1) * 3*4*5
    assert comp.forward_macs(net) == 144 + 240 + 5 * 60


def test_learns_digits() -> None:
    recipe = make_recipe({"task": "digits", "seed": 0, "fidelity": {"epochs": 10},
                          "network": {"hidden": (64,)}})
    task = load_task("digits", fidelity=recipe.fidelity, seed=0)
    principles = {"connectivity": Dense(), "learning": Backprop(), "trigger": Never(), "growth": NoGrowth(),
                  "composition": CapsuleRouting()}
    result = Trainer(recipe, principles, task).run()
    assert result.test_accuracy >= 0.90, result.test_accuracy


class TestCapsuleRoutingConformance(CompositionConformance):
    @pytest.fixture
    def principle_class(self) -> type:
        return CapsuleRouting

    @pytest.fixture(params=[{}, {"routing_iterations": 0, "primary_capsules": 4, "class_dim": 8}])
    def config(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        return dict(request.param)
