"""Carry optimizer state across growth.

Growth appends rows/columns, so each old parameter is the leading slice of its replacement. Every
per-parameter state tensor of the old parameter's shape (momentum, Adam moments) is zero-padded into
the new shape; scalars (``step``) are kept. New parameters start with empty state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from principlelab.core.network import ParamRemap


def _pad_into(old_state: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A zero tensor of ``shape`` whose leading slice is ``old_state``."""
    new = torch.zeros(shape, dtype=old_state.dtype, device=old_state.device)
    new[tuple(slice(0, n) for n in old_state.shape)] = old_state
    return new


def migrate_optimizer(optimizer: torch.optim.Optimizer, remap: ParamRemap,
                      params: Sequence[torch.Tensor]) -> None:
    """Point ``optimizer`` (one param group) at ``params`` and carry state of replaced tensors.

    Args:
        optimizer: a torch optimizer built over the previous parameter list.
        remap: the network's record of which tensor replaced which.
        params: the full current parameter list (network then composition).
    """
    assert len(optimizer.param_groups) == 1, "migrate_optimizer supports one param group"
    for old, new in remap.replaced.values():
        state = optimizer.state.pop(old, None)
        if not state:
            continue
        optimizer.state[new] = {
            key: _pad_into(value, new.shape) if torch.is_tensor(value) and value.shape == old.shape else value
            for key, value in state.items()
        }
    optimizer.param_groups[0]["params"] = list(params)
    alive = {id(p) for p in params}
    for key in [k for k in optimizer.state if id(k) not in alive]:
        del optimizer.state[key]
