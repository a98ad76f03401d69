"""Shared selection -> operator code of the targeted growth rules (``extrema``, ``katz``).

A rule *selects* hidden units (:class:`Target`: layer, unit, severity, polarity) and this module
*applies an operator* at them through the network's growth operations (catalog §1.0: selector x
operator). Operators (catalog §1.2-1.3, §5.1 stack):

- ``vertical_clone`` (O2 reading (a), "relay clone"): ``up`` adds to layer ``L + 1`` a relay unit
  reading target ``(L, j)`` with one-hot weight ``clone_scale`` (``add_units(init="relay")``);
  ``down`` adds to layer ``L - 1`` a clone (incoming weights x ``clone_scale``, relative ``noise``)
  of the unit ``i`` of ``L - 1`` with the largest ``|w|`` into ``j``; ``both`` does both. Outgoing
  weights are zero, so the function is kept. A target whose relay layer is not hidden is skipped.
- ``split`` (O3, Net2Wider): ``add_units(init="split")`` at the target; function kept exactly.
- ``highway`` (R1-R3): a route from each source (``high`` extrema for ``high_to_low``) to the
  least-loaded unit of the other polarity in the nearest hidden layer ``L + 2 .. L + max_hops``,
  as one active mask entry of the skip block ``L -> M`` (created by ``add_skip`` when missing, then
  masked to the routes). Weight ``route_init * sqrt(2 / (fan_in + fan_out)) * N(0, 1)``: 0 keeps
  the function. One ``highway`` event per block lists its routes.

Caps (catalog B1, §5 item 4): an event at training progress ``epoch / horizon`` in the first, second or
last third is ``coarse``/``medium``/``fine`` (reversed with ``early_is="fine"``) and adds at most
``coarse_cap``/``medium_cap``/``fine_cap`` units (routes, for ``highway``); a rule adds at most
``max_total_units`` units in a run (default: the hidden units it first saw, i.e. at most 2x size);
``Network.room`` caps every layer.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from principlelab.core.events import GrowthEvent
from principlelab.core.network import Network
from principlelab.core.principles import PrincipleConfig
from principlelab.core.signals import Signals

Polarity = Literal["high", "low"]
LEVELS = ("coarse", "medium", "fine")


@dataclass(frozen=True)
class Target:
    """A selected hidden unit: ``severity`` orders targets (larger first), ``polarity`` says which
    extreme it is at (``high``: upper bound / top / always-max; ``low``: lower bound / bottom / dead)."""

    layer: int
    unit: int
    severity: float
    polarity: Polarity
    dead: bool = False
    """At the activation's floor on most of the batch: a copy or relay of it would be as dead."""


def ranked(targets: list[Target]) -> list[Target]:
    """Most severe first; ties by layer, then unit (deterministic)."""
    return sorted(targets, key=lambda t: (-t.severity, t.layer, t.unit))


class OperatorConfig(PrincipleConfig):
    """Operator, cap and selection-size fields shared by the targeted growth rules."""

    operator: Literal["vertical_clone", "split", "highway"] = Field(
        "vertical_clone", description="what is added at the selected units")
    clone_direction: Literal["up", "down", "both"] = Field(
        "up", description="vertical_clone: relay in the layer above, clone of the strongest input below")
    clone_scale: float = Field(0.7, gt=0.0, le=2.0, description="vertical_clone: relay/clone weight scale",
                               json_schema_extra={"search": {"low": 0.25, "high": 1.0}})
    noise: float = Field(0.05, ge=0.0, le=0.5,
                         description="split: outgoing ratio 0.5 +- noise; down clone: relative weight noise",
                         json_schema_extra={"search": {"low": 0.0, "high": 0.2}})
    route_direction: Literal["high_to_low", "low_to_high"] = Field(
        "high_to_low", description="highway: route from high to low extrema, or low to high")
    max_hops: int = Field(3, ge=2, le=16, description="highway: farthest later layer a route may reach",
                          json_schema_extra={"search": {"low": 2, "high": 4}})
    route_init: float = Field(0.0, ge=0.0, le=2.0,
                              description="highway: route weight gain x xavier std (0 keeps the function)",
                              json_schema_extra={"search": {"choices": [0.0, 0.1, 1.0]}})
    top_fraction: float = Field(0.1, gt=0.0, le=1.0, description="act on this most severe fraction",
                                json_schema_extra={"search": {"low": 0.02, "high": 0.5, "log": True}})
    coarse_cap: int = Field(10, ge=1, le=100_000, description="max units (routes) per coarse-scale event")
    medium_cap: int = Field(50, ge=1, le=100_000, description="max units (routes) per medium-scale event")
    fine_cap: int = Field(200, ge=1, le=100_000, description="max units (routes) per fine-scale event")
    early_is: Literal["coarse", "fine"] = Field("coarse", description="scale of the first third of training")
    horizon_epochs: int = Field(30, ge=1, le=100_000,
                                description="epochs that make up 'training' for the scale schedule")
    max_total_units: int | None = Field(
        None, ge=1, le=10**7, description="units this rule may add in a run (None: the initial hidden units)")


def source_polarity(cfg: OperatorConfig) -> Polarity | None:
    """The polarity a highway starts from; ``None`` (any) for the unit-adding operators."""
    if cfg.operator != "highway":
        return None
    return "high" if cfg.route_direction == "high_to_low" else "low"


def scale_level(epoch: int, horizon: int, early_is: str) -> str:
    """``coarse``/``medium``/``fine`` for an event in ``epoch`` (0-based) of ``horizon`` epochs."""
    stage = min(2, int(3 * max(0, epoch) / max(1, horizon)))
    return (LEVELS if early_is == "coarse" else LEVELS[::-1])[stage]


class GrowthBudget:
    """Per-rule state: the hidden units first seen and the units added since (the total cap)."""

    def __init__(self) -> None:
        self.initial_hidden: int | None = None
        self.added = 0

    def observe(self, net: Network) -> None:
        """Remember the hidden units of the first network seen (the default total cap)."""
        if self.initial_hidden is None:
            self.initial_hidden = net.num_hidden_units()

    def event_limit(self, net: Network, cfg: OperatorConfig, signals: Signals) -> tuple[str, int, int]:
        """``(scale level, per-event cap, units left under the total cap)`` for a growth now."""
        self.observe(net)
        assert self.initial_hidden is not None
        horizon = getattr(signals, "total_epochs", None) or cfg.horizon_epochs
        level = scale_level(signals.epoch, int(horizon), cfg.early_is)
        cap = {"coarse": cfg.coarse_cap, "medium": cfg.medium_cap, "fine": cfg.fine_cap}[level]
        total = cfg.max_total_units if cfg.max_total_units is not None else self.initial_hidden
        return level, cap, max(0, total - self.added)


def apply_operator(net: Network, targets: list[Target], pool: list[Target], cfg: OperatorConfig,
                   budget: GrowthBudget, signals: Signals, generator: torch.Generator) -> list[GrowthEvent]:
    """Apply ``cfg.operator`` at ``targets`` (most severe first) under the caps; the events.

    ``pool`` holds the highway destinations (units of the polarity opposite to the sources).
    """
    budget.observe(net)
    if not targets:
        return []
    level, cap, left = budget.event_limit(net, cfg, signals)
    if cfg.operator == "highway":
        events = _highways(net, targets, pool, cfg, cap, generator)
    else:
        events = _add_units(net, targets, cfg, min(cap, left), generator)
        budget.added += sum(e.units for e in events)
    for event in events:
        event.details.update({"operator": cfg.operator, "scale_level": level, "cap": cap})
    return events


# --------------------------------------------------------------------------- unit operators
def _strongest_input(net: Network, layer: int, unit: int) -> int | None:
    """The unit of ``layer - 1`` with the largest ``|w|`` into ``(layer, unit)``; None if none."""
    row = net.layers[layer - 1].effective_weight().detach()[unit].abs()  # [widths[layer - 1]]
    return int(row.argmax()) if float(row.max()) > 0 else None


def _unit_requests(net: Network, t: Target, cfg: OperatorConfig) -> list[tuple[int, str, int]]:
    """``(layer to grow, init, source unit)`` the operator wants for target ``t``.

    A dead target gets a fresh unit in its layer (``zero``: random incoming weights, zero outgoing, so
    the function is kept and the unit is alive), whatever the operator: a split copy or a relay of a
    unit that is 0 on most of the batch is 0 there too, and neither it nor its weights ever learn (the
    seeds' "replace dead before adding" treats dead units as lost capacity, 002:8804-8817)."""
    if t.dead:
        return [(t.layer, "zero", t.unit)]
    if cfg.operator == "split":
        return [(t.layer, "split", t.unit)]
    found = []
    if cfg.clone_direction in ("up", "both") and t.layer + 1 < net.depth:
        found.append((t.layer + 1, "relay", t.unit))
    if cfg.clone_direction in ("down", "both") and t.layer - 1 >= 1:
        source = _strongest_input(net, t.layer, t.unit)
        if source is not None:
            found.append((t.layer - 1, "clone", source))
    return found


def servable(net: Network, targets: list[Target], cfg: OperatorConfig) -> list[Target]:
    """The targets the unit operator can act on (all of them for ``highway``): a relay ``up`` from the
    last hidden layer, or a clone ``down`` from the first, has no layer to grow."""
    if cfg.operator == "highway":
        return targets
    return [t for t in targets if _unit_requests(net, t, cfg)]


def _add_units(net: Network, targets: list[Target], cfg: OperatorConfig, limit: int,
               generator: torch.Generator) -> list[GrowthEvent]:
    planned: dict[tuple[int, str], list[tuple[int, Target]]] = defaultdict(list)
    per_layer: dict[int, int] = defaultdict(int)
    seen: set[tuple[int, str, int]] = set()
    count = 0
    for t in targets:
        if count >= limit:
            break
        for layer, init, source in _unit_requests(net, t, cfg):
            if count >= limit:
                break
            if (layer, init, source) in seen or net.room(layer) - per_layer[layer] <= 0:
                continue
            seen.add((layer, init, source))
            planned[(layer, init)].append((source, t))
            per_layer[layer] += 1
            count += 1
    events: list[GrowthEvent] = []
    for (layer, init), items in sorted(planned.items()):
        scale = 1.0 if init == "split" else cfg.clone_scale
        sources = None if init == "zero" else [s for s, _ in items]
        grown = net.add_units(layer, len(items), init=init, source_units=sources,  # type: ignore[arg-type]
                              scale=scale, noise=cfg.noise, generator=generator)
        for event in grown:
            event.details["targets"] = [[t.layer, t.unit] for _, t in items][:event.units]
            if init == "zero":
                event.details["fresh_for_dead"] = True
            elif cfg.operator == "vertical_clone":
                event.details["direction"] = "up" if init == "relay" else "down"
        events += grown
    return events


# --------------------------------------------------------------------------------- highways
def _connected(net: Network, src: int, dst: int, s: int, d: int) -> bool:
    block = net.skips.get((src, dst))
    return block is not None and (block.mask is None or bool(block.mask[d, s] > 0))


def _fan_in(net: Network, layer: int, unit: int) -> int:
    """Active skip connections into ``(layer, unit)``."""
    return sum(int(b.mask[unit].sum()) if b.mask is not None else b.weight.shape[1]
               for (_, dst), b in net.skips.items() if dst == layer)


def _highways(net: Network, targets: list[Target], pool: list[Target], cfg: OperatorConfig, cap: int,
              generator: torch.Generator) -> list[GrowthEvent]:
    src_pol = source_polarity(cfg)
    frozen = {k: set(f.rows.tolist()) for k, f in net.frozen.items()}
    dests: dict[int, list[Target]] = defaultdict(list)
    for p in pool:
        if p.polarity != src_pol and p.unit not in frozen.get(p.layer, set()):
            dests[p.layer].append(p)
    load: dict[tuple[int, int], int] = {}
    routes: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    count = 0
    for t in targets:
        if count >= cap:
            break
        if t.polarity != src_pol:
            continue
        for dst in range(t.layer + 2, min(t.layer + cfg.max_hops, net.depth - 1) + 1):
            free = [d for d in dests[dst] if not _connected(net, t.layer, dst, t.unit, d.unit)
                    and (t.unit, d.unit) not in routes.get((t.layer, dst), [])]
            if not free:
                continue
            for d in free:
                load.setdefault((dst, d.unit), _fan_in(net, dst, d.unit))
            best = min(free, key=lambda d: (load[(dst, d.unit)], -d.severity, d.unit))
            routes[(t.layer, dst)].append((t.unit, best.unit))
            load[(dst, best.unit)] += 1
            count += 1
            break
    events: list[GrowthEvent] = []
    for (src, dst), pairs in sorted(routes.items()):
        if (src, dst) not in net.skips:  # an empty masked block: the routes below are its only connections
            events += net.add_skip(src, dst, mask=torch.zeros(net.widths[dst], net.widths[src]))
        block = net.skips[(src, dst)]
        assert block.mask is not None, f"planned routes into the dense skip {src}->{dst}"
        params_before, macs_before = net.num_params(), net.forward_macs()
        s_idx = torch.tensor([s for s, _ in pairs], dtype=torch.long)
        d_idx = torch.tensor([d for _, d in pairs], dtype=torch.long)
        std = cfg.route_init * math.sqrt(2.0 / (net.widths[src] + net.widths[dst]))
        with torch.no_grad():
            block.mask[d_idx, s_idx] = 1.0
            block.weight[d_idx, s_idx] = std * torch.randn(len(pairs), generator=generator) if std else 0.0
        net._changed()
        event = GrowthEvent(
            operation="highway", layer=dst, units=0, source_units=tuple(s for s, _ in pairs),
            params_delta=net.num_params() - params_before, macs_delta=net.forward_macs() - macs_before,
            function_preserving=cfg.route_init == 0.0,
            details={"src": src, "dst": dst, "routes": [[s, d] for s, d in pairs],
                     "direction": cfg.route_direction, "route_init": cfg.route_init})
        net.events.append(event)
        events.append(event)
    return events
