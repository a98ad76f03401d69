"""Learning rule ``forward_forward``: hand-computed goodness/loss/readout, locality, learning, growth."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from principlelab.core.network import Network
from principlelab.core.principles import Composition, Firing, PrincipleConfig
from principlelab.core.recipe import make_recipe
from principlelab.core.signals import Signals
from principlelab.core.tasks import load_task
from principlelab.core.trainer import Trainer
from principlelab.errors import ConfigError
from principlelab.plugins.composition.sequential import Sequential
from principlelab.plugins.connectivity.dense import Dense
from principlelab.plugins.growth.none import NoGrowth
from principlelab.plugins.learning.forward_forward import ForwardForward, goodness, layer_loss, normalise
from principlelab.plugins.trigger.never import Never
from principlelab.registry import get_registry
from principlelab.testing import LearningRuleConformance
from principlelab.testing.tiny import check_compatible

COMP = Sequential()


# --------------------------------------------------------------------------- hand-built networks
def hand_net(widths: list[int], weights: list[list[list[float]]], biases: list[list[float]]) -> Network:
    net = Network(widths, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for block, w, b in zip(net.layers, weights, biases):
            block.weight.copy_(torch.tensor(w))
            assert block.bias is not None
            block.bias.copy_(torch.tensor(b))
    return net


W1 = [[1.0, -1.0], [0.5, 2.0], [-1.0, 0.5]]
B1 = [0.1, -0.2, 0.3]
E = [[1.0, -1.0], [0.0, 2.0], [-0.5, 0.5]]  # [width_1 = 3, C = 2]
W2 = [[0.5, -0.5, 1.0], [1.0, 1.0, -1.0], [-0.3, 0.2, 0.4]]
B2 = [0.0, 0.1, -0.1]
WOUT = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # output layers (unused by FF)
X = [[3.0, 4.0], [-1.0, 2.0]]
Y = [0, 1]


def ff_on(net: Network, **config: Any) -> ForwardForward:
    ff = ForwardForward(**config)
    ff.setup(net, COMP)
    with torch.no_grad():
        ff.embedding.copy_(torch.tensor(E))
    return ff


def np_norm(v: np.ndarray, mode: str = "unit_sqrt_dim") -> np.ndarray:
    if mode == "none":
        return v
    unit = v / (np.linalg.norm(v) + 1e-6)
    return unit * math.sqrt(len(v)) if mode == "unit_sqrt_dim" else unit


def np_hidden(x: list[float], label: int, label_scale: float, two_layers: bool) -> list[np.ndarray]:
    """Post-activations of the hidden layers, computed with plain numpy."""
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    h1 = relu(np.array(W1) @ np_norm(np.array(x)) + label_scale * np.array(E)[:, label] + np.array(B1))
    if not two_layers:
        return [h1]
    h2 = relu(np.array(W2) @ np_norm(h1) + np.array(B2))
    return [h1, h2]


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


# ------------------------------------------------------------------------------ the pieces
def test_normalise_modes() -> None:
    h = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert torch.allclose(normalise(h, "unit"), torch.tensor([[0.6, 0.8], [0.0, 0.0]]), atol=1e-6)
    root2 = math.sqrt(2)
    assert torch.allclose(normalise(h, "unit_sqrt_dim"),
                          torch.tensor([[0.6 * root2, 0.8 * root2], [0.0, 0.0]]), atol=1e-6)
    assert torch.equal(normalise(h, "none"), h)


def test_goodness_and_layer_loss_by_hand() -> None:
    h = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 3.0]])
    assert torch.allclose(goodness(h), torch.tensor([5.0, 9.25]))
    g_pos, g_neg = torch.tensor([5.0, 1.0]), torch.tensor([2.0, 4.0])
    expected = (softplus(3 - 5) + softplus(3 - 1)) / 2 + (softplus(2 - 3) + softplus(4 - 3)) / 2
    assert float(layer_loss(g_pos, g_neg, 3.0)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("label_scale", [1.0, 1.5])
def test_one_layer_goodness_loss_and_readout_by_hand(label_scale: float) -> None:
    """A 2-3-2 network: scores, evaluate's loss and the step's loss match numpy."""
    net = hand_net([2, 3, 2], [W1, WOUT], [B1, [0.0, 0.0]])
    theta_per_unit = 0.7
    ff = ff_on(net, label_scale=label_scale, theta_per_unit=theta_per_unit)
    x, y = torch.tensor(X), torch.tensor(Y)
    expected = np.array([[np.square(np_hidden(xi, c, label_scale, False)[0]).sum() for c in range(2)]
                         for xi in X])
    with torch.no_grad():
        scores = ff.predict(net, COMP, x)
        loss, predicted = ff.evaluate(net, COMP, x, y)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5)
    assert predicted.tolist() == expected.argmax(1).tolist()
    logits = expected - expected.max(1, keepdims=True)
    ce = -np.mean([logits[i, Y[i]] - np.log(np.exp(logits[i]).sum()) for i in range(2)])
    assert float(loss) == pytest.approx(ce, rel=1e-5)
    # two classes: the wrong label is forced (1 - y), so the step's loss is known exactly
    theta = theta_per_unit * 3
    g_pos = [expected[i, Y[i]] for i in range(2)]
    g_neg = [expected[i, 1 - Y[i]] for i in range(2)]
    want = np.mean([softplus(theta - g) for g in g_pos]) + np.mean([softplus(g - theta) for g in g_neg])
    step_loss = ff.step(net, COMP, x, y, Signals(net))
    assert float(step_loss) == pytest.approx(want, rel=1e-5)
    assert step_loss.dim() == 0 and not step_loss.requires_grad


@pytest.mark.parametrize("skip_first", [False, True])
def test_two_layer_readout_by_hand(skip_first: bool) -> None:
    """2-3-3-2: layer 2 reads the normalised layer 1; scores sum goodness (optionally not layer 1's)."""
    net = hand_net([2, 3, 3, 2], [W1, W2, WOUT], [B1, B2, [0.0, 0.0]])
    ff = ff_on(net, skip_first_layer_goodness=skip_first)
    expected = np.array([[sum(np.square(h).sum() for h in np_hidden(xi, c, 1.0, True)[int(skip_first):])
                          for c in range(2)] for xi in X])
    with torch.no_grad():
        scores = ff.predict(net, COMP, torch.tensor(X))
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5)


def test_single_hidden_layer_keeps_its_goodness_when_skipping_first() -> None:
    net = hand_net([2, 3, 2], [W1, WOUT], [B1, [0.0, 0.0]])
    with torch.no_grad():
        a = ff_on(net, skip_first_layer_goodness=True).predict(net, COMP, torch.tensor(X))
        b = ff_on(net).predict(net, COMP, torch.tensor(X))
    assert torch.equal(a, b) and bool((a > 0).any())


def test_input_norm_none_reads_raw_input() -> None:
    net = hand_net([2, 3, 2], [W1, WOUT], [B1, [0.0, 0.0]])
    ff = ff_on(net, input_norm="none")
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    h = relu(np.array(W1) @ np.array(X[0]) + np.array(E)[:, 1] + np.array(B1))
    with torch.no_grad():
        scores = ff.predict(net, COMP, torch.tensor(X))
    assert float(scores[0, 1]) == pytest.approx(float(np.square(h).sum()), rel=1e-5)


# ----------------------------------------------------------------------------------- locality
def test_no_gradient_crosses_layers() -> None:
    net = Network([4, 5, 5, 5, 3], generator=torch.Generator().manual_seed(1))
    ff = ForwardForward()
    ff.setup(net, COMP)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    x0, base = ff._first_base(net, x)
    hidden = ff._hidden(net, x0, base + ff._label_term(labels))
    layer_params = [[ff.embedding, *net.layers[0].tensors()], *(b.tensors() for b in net.layers[1:3])]
    for k in (2, 3):
        below = [t for params in layer_params[:k - 1] for t in params]
        grads = torch.autograd.grad(goodness(hidden[k - 1]).sum(), [*below, net.layers[k - 1].weight],
                                    allow_unused=True, retain_graph=True)
        assert all(g is None for g in grads[:-1]), f"layer {k}'s goodness reaches the weights below it"
        assert grads[-1] is not None and bool(grads[-1].abs().sum() > 0)
    # a training step: each layer's gradient is that of its own loss alone; the output layer is idle
    out_before = net.layers[-1].weight.detach().clone()
    ff.step(net, COMP, x, labels, Signals(net))
    assert net.layers[-1].weight.grad is None and torch.equal(net.layers[-1].weight.detach(), out_before)
    assert all(b.weight.grad is not None for b in net.layers[:-1])


def test_step_gradient_equals_own_layer_loss() -> None:
    """The summed loss's gradient on each layer equals its own loss's alone (nothing leaks across)."""
    net = Network([4, 5, 5, 3], generator=torch.Generator().manual_seed(1))
    twin = net.copy()
    ff = ForwardForward(lr=1e-3)
    ff.setup(net, COMP)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    state = ff.generator.get_state()
    embedding = ff.embedding.detach().clone()
    ff.step(net, COMP, x, y, Signals(net))
    wrong = (y + torch.randint(1, 3, y.shape, generator=torch.Generator().set_state(state))) % 3
    ref = ForwardForward(lr=1e-3)
    ref.setup(twin, COMP)
    with torch.no_grad():
        ref.embedding.copy_(embedding)
    x0, base = ref._first_base(twin, torch.cat([x, x]))
    hidden = ref._hidden(twin, x0, base + ref._label_term(torch.cat([y, wrong])))
    for k in (1, 2):
        g = goodness(hidden[k - 1])
        own = layer_loss(g[:6], g[6:], ref.config.theta_per_unit * 5)
        mine = [twin.layers[k - 1].weight] + ([ref.embedding] if k == 1 else [])
        theirs = [net.layers[k - 1].weight] + ([ff.embedding] if k == 1 else [])
        for want, p in zip(torch.autograd.grad(own, mine, retain_graph=True), theirs):
            assert p.grad is not None
            torch.testing.assert_close(p.grad, want, msg=f"layer {k}: gradient is not its own loss's")


# ------------------------------------------------------------------------------------ training
def digits_trainer(run_seed: int = 0, *, epochs: int = 10, hidden: tuple[int, ...] = (256, 256),
                   **config: Any) -> Trainer:
    ff = ForwardForward(**config)
    recipe = make_recipe({
        "task": "digits", "seed": run_seed, "network": {"hidden": list(hidden)},
        "fidelity": {"name": "ff_test", "epochs": epochs, "batch_size": 64},
        "learning": {"name": ff.name, "config": ff.config.model_dump(mode="json")}})
    task = load_task(recipe.task, fidelity=recipe.fidelity, seed=recipe.seed)
    principles = {"connectivity": Dense(), "learning": ff, "trigger": Never(), "growth": NoGrowth(),
                  "composition": Sequential()}
    return Trainer(recipe, principles, task)


def test_learns_digits_to_90_percent() -> None:
    """The acceptance bar: >= 0.90 test accuracy on digits (2x256, 10 epochs; about 0.3 s)."""
    result = digits_trainer(0).run()
    assert result.test_accuracy >= 0.90, f"test accuracy {result.test_accuracy:.3f}"
    assert result.epochs[-1].train_loss < result.epochs[0].train_loss


def test_deterministic_under_seed() -> None:
    a, b = digits_trainer(3, epochs=2), digits_trainer(3, epochs=2)
    ra, rb = a.run(), b.run()
    assert [e.train_loss for e in ra.epochs] == [e.train_loss for e in rb.epochs]
    assert ra.test_accuracy == rb.test_accuracy
    for p, q in zip(a.learning._params(a.net), b.learning._params(b.net)):  # type: ignore[attr-defined]
        assert torch.equal(p.detach(), q.detach())
    c = digits_trainer(3, epochs=2, seed=7)  # same run seed, another negative-label seed
    rc = c.run()
    assert [e.train_loss for e in rc.epochs] != [e.train_loss for e in ra.epochs], (
        "the config seed does not change the negative labels")


def train_steps(ff: ForwardForward, net: Network, x: torch.Tensor, y: torch.Tensor, steps: int,
                batch: int = 64) -> list[float]:
    losses, signals = [], Signals(net)
    for i in range(steps):
        at = (i * batch) % (x.shape[0] - batch)
        losses.append(float(ff.step(net, COMP, x[at:at + batch], y[at:at + batch], signals)))
    return losses


def accuracy(ff: ForwardForward, net: Network, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((ff.evaluate(net, COMP, x, y)[1] == y).float().mean())


def test_growth_mid_training_trains_new_units() -> None:
    fidelity = make_recipe({"fidelity": {"name": "f", "epochs": 1}}).fidelity
    task = load_task("digits", fidelity=fidelity, seed=0)
    net = Network([64, 48, 48, 10], generator=torch.Generator().manual_seed(0))
    ff = ForwardForward()
    torch.manual_seed(0)
    ff.setup(net, COMP)
    train_steps(ff, net, task.x_train, task.y_train, 40)
    old_w1 = net.layers[0].weight
    assert ff.optimizer.state[old_w1], "no optimizer state before growth"
    old_exp_avg = ff.optimizer.state[old_w1]["exp_avg"].clone()
    old_embedding = ff.embedding.detach().clone()
    old_embedding_avg = ff.optimizer.state[ff.embedding]["exp_avg"].clone()
    net.add_units(1, init="split", source_units=list(range(8)), noise=0.05,
                  generator=torch.Generator().manual_seed(1))
    net.add_units(2, 4, init="zero", generator=torch.Generator().manual_seed(2))
    ff.on_growth(net, COMP, net.pop_param_remap())
    assert tuple(ff.embedding.shape) == (56, 10)
    assert torch.equal(ff.embedding.detach()[:48], old_embedding)
    assert torch.equal(ff.embedding.detach()[48:], torch.zeros(8, 10)), "new units' label columns not zero"
    new_w1 = net.layers[0].weight
    state = ff.optimizer.state[new_w1]
    assert torch.equal(state["exp_avg"][:48], old_exp_avg) and not bool(state["exp_avg"][48:].any())
    moments = ff.optimizer.state[ff.embedding]["exp_avg"]
    assert torch.equal(moments[:48], old_embedding_avg) and not bool(moments[48:].any()), "E's state lost"
    assert {id(p) for p in ff.optimizer.param_groups[0]["params"]} == {id(p) for p in ff._params(net)}
    after = (net.layers[0].weight.detach().clone(), ff.embedding.detach().clone(),
             net.layers[1].weight.detach().clone())
    losses = train_steps(ff, net, task.x_train, task.y_train, 60)
    assert all(math.isfinite(v) for v in losses)
    assert not torch.equal(net.layers[0].weight.detach()[48:], after[0][48:]), "new layer-1 units untrained"
    assert not torch.equal(ff.embedding.detach()[48:], after[1][48:]), "new label columns untrained"
    assert not torch.equal(net.layers[1].weight.detach()[48:], after[2][48:]), "new layer-2 units untrained"
    assert accuracy(ff, net, task.x_val, task.y_val) > 0.8


@pytest.mark.parametrize("after", [0, 1])
def test_add_layer_keeps_training(after: int) -> None:
    fidelity = make_recipe({"fidelity": {"name": "f", "epochs": 1}}).fidelity
    task = load_task("digits", fidelity=fidelity, seed=0)
    net = Network([64, 32, 10], generator=torch.Generator().manual_seed(0))
    ff = ForwardForward()
    ff.setup(net, COMP)
    train_steps(ff, net, task.x_train, task.y_train, 10)
    net.add_layer(after)
    ff.on_growth(net, COMP, net.pop_param_remap())
    assert ff.embedding.shape[0] == net.widths[1]
    before = [p.detach().clone() for p in ff._params(net)]
    losses = train_steps(ff, net, task.x_train, task.y_train, 10)
    assert all(math.isfinite(v) for v in losses)
    assert all(not torch.equal(a, p.detach()) for a, p in zip(before, ff._params(net)))
    with torch.no_grad():
        assert tuple(ff.predict(net, COMP, task.x_val[:5]).shape) == (5, 10)


def test_frozen_units_keep_weights_and_label_columns() -> None:
    net = Network([6, 8, 8, 3], generator=torch.Generator().manual_seed(0))
    ff = ForwardForward(lr=1e-2)
    ff.setup(net, COMP)
    net.freeze(1, [0, 2])
    w, e = net.layers[0].weight.detach()[[0, 2]].clone(), ff.embedding.detach()[[0, 2]].clone()
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(3))
    y = torch.arange(16) % 3
    train_steps(ff, net, x, y, 3, batch=8)
    assert torch.equal(net.layers[0].weight.detach()[[0, 2]], w)
    assert torch.equal(ff.embedding.detach()[[0, 2]], e)
    assert not torch.equal(net.layers[0].weight.detach()[1], w[0])


def test_skip_edge_into_hidden_layer_is_trained_locally() -> None:
    net = Network([6, 8, 8, 8, 3], generator=torch.Generator().manual_seed(0))
    ff = ForwardForward()
    ff.setup(net, COMP)
    net.add_skip(1, 3)
    net.add_skip(2, 4)  # into the output layer: unused by FF
    ff.on_growth(net, COMP, net.pop_param_remap())
    ids = {id(p) for p in ff._params(net)}
    assert id(net.skips[(1, 3)].weight) in ids and id(net.skips[(2, 4)].weight) not in ids
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(3))
    train_steps(ff, net, x, torch.arange(16) % 3, 3, batch=8)
    assert bool(net.skips[(1, 3)].weight.detach().abs().sum() > 0)
    assert not bool(net.skips[(2, 4)].weight.detach().any())


def test_keeps_function_only_for_changes_that_add_no_unit() -> None:
    """A zero skip edge keeps FF's scores; units with zero outgoing weights (function-preserving for the
    network's output) add their own goodness and change the next layer's normalisation, so they do not."""
    net = Network([6, 8, 8, 8, 3], generator=torch.Generator().manual_seed(0))
    ff = ForwardForward()
    ff.setup(net, COMP)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = ff.predict(net, COMP, x)
    [skip] = net.add_skip(1, 3)
    ff.on_growth(net, COMP, net.pop_param_remap())
    with torch.no_grad():
        torch.testing.assert_close(ff.predict(net, COMP, x), before, atol=1e-6, rtol=0)
    assert skip.function_preserving and ff.keeps_function(skip)
    [units] = net.add_units(2, 2, init="zero", generator=torch.Generator().manual_seed(1))
    ff.on_growth(net, COMP, net.pop_param_remap())
    with torch.no_grad():
        changed = float((ff.predict(net, COMP, x) - before).abs().max())
    assert units.function_preserving and not ff.keeps_function(units) and changed > 1e-3


@pytest.mark.parametrize("growth", ["random", "extrema", "katz"])
def test_trainer_records_growth_that_changed_the_scores_as_not_preserving(growth: str) -> None:
    """Under FF a growth event's ``function_preserving`` says whether the run's scores were kept (before,
    every unit-adding event said True while katz's relays changed 40 of 64 predictions after one epoch)."""
    recipe = make_recipe({"task": "digits", "fidelity": {"name": "f", "epochs": 1}, "network": {"hidden": [32, 32]},
                          "learning": "forward_forward", "trigger": "every_k", "growth": growth})
    trainer = Trainer(recipe, get_registry().instantiate(recipe),
                      load_task("digits", fidelity=recipe.fidelity, seed=0))
    trainer.run()
    x = trainer.task.x_val[:64]
    with torch.no_grad():
        before = trainer.learning.predict(trainer.net, trainer.composition, x)
    events = trainer._grow(Firing(reason="test"), epoch=0)
    with torch.no_grad():
        after = trainer.learning.predict(trainer.net, trainer.composition, x)
    assert events and all(e.units > 0 for e in events)
    assert float((after - before).abs().max()) > 1e-3
    assert [e.function_preserving for e in events] == [False] * len(events)
    assert all(not e.function_preserving for e in trainer.net.events)


# ------------------------------------------------------------------------------- bookkeeping
def test_macs_per_sample() -> None:
    net = hand_net([2, 3, 3, 2], [W1, W2, WOUT], [B1, B2, [0.0, 0.0]])
    ff = ff_on(net)
    # forward: first block (6) once, second (9) for positive and negative; backward the same; E 2x3
    assert ff.macs_per_sample(net, COMP) == 2 * (6 + 2 * 9) + 2 * 3
    assert ff.predict_macs_per_sample(net) == 6 + 2 * 9


def test_config_bounds_and_incompatibility() -> None:
    with pytest.raises(ConfigError, match="theta_per_unit"):
        ForwardForward(theta_per_unit=0.0)
    with pytest.raises(ConfigError, match="input_norm"):
        ForwardForward(input_norm="l2")

    class CapsuleRouting(Composition):
        name: ClassVar[str] = "capsule_routing"

        class Config(PrincipleConfig):
            pass

        def forward(self, net: Network, x: torch.Tensor) -> torch.Tensor:
            return net.forward(x)

    with pytest.raises(ConfigError, match="capsule_routing"):
        check_compatible({"learning": ForwardForward(), "composition": CapsuleRouting()})


class TestForwardForwardConformance(LearningRuleConformance):
    """The shared learning-rule kit (tiny digits, one hidden layer of 32, Net2Wider growth)."""

    @pytest.fixture
    def principle_class(self) -> type:
        return ForwardForward


def test_predict_in_chunks_matches_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import principlelab.plugins.learning.forward_forward as module

    net = Network([6, 8, 8, 3], generator=torch.Generator().manual_seed(0))
    ff = ForwardForward()
    ff.setup(net, COMP)
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = ff.predict(net, COMP, x)
        monkeypatch.setattr(module, "PREDICT_ROWS", 9)  # 3 samples (9 rows) per pass
        chunked = ff.predict(net, COMP, x)
    torch.testing.assert_close(chunked, whole)
