"""The parameters a trial will suggest next, sampled together: :class:`ExpectedParameters`.

A campaign trial suggests its five slots, then every searched field of the five chosen principles,
always in an order known in advance (:meth:`~principlelab.studies.space.SearchSpace.suggest`).
Optuna asks the sampler for one parameter at a time, and :class:`~principlelab.studies.tpe.SplitOnceTPESampler`
computes each one's densities with a few dozen small array operations, whose fixed cost is most of
the time. Told what comes next (``SplitOnceTPESampler.expect``), it samples all of them on the
first one's turn with one pass of array operations for each kind of parameter
(:func:`~principlelab.studies.tpe_density.sample_many`), and hands the values out in turn.

The values are those that sampling one at a time gives, because TPE takes the same count of uniform
numbers from the generator for every parameter (``2 * n_candidates``: its kernel choice and its
candidates' draw) whatever the parameter is. So the expected parameters' numbers are drawn in one call,
in their order, and each gets the ones it would have drawn alone. Where sampling one at a time would
differ, this follows it:

- the history changed between two parameters (other workers' trials): the parameters not handed out
  yet are sampled again from the new history with their own numbers;
- the trial asks for something else (another name or distribution, a fixed parameter Optuna does not
  sample, an error before the last one): the generator is put back where sampling one at a time
  would have left it (:meth:`ExpectedParameters.settle`), and the sampler goes on one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution

__all__ = ["ExpectedParameters", "same_distribution"]

Entries = Sequence[tuple[str, BaseDistribution]]
SampleEntries = Callable[[Entries, np.ndarray], list[float]]
"""Internal values of ``entries`` from their uniform numbers ``[len(entries), 2, n_candidates]``."""


def same_distribution(known: BaseDistribution, distribution: BaseDistribution) -> bool:
    """Whether two distributions are equal (Optuna's ``==``), checking the common case cheaply first."""
    if known is distribution or (type(known) is type(distribution) and known.__dict__ == distribution.__dict__):
        return True
    return bool(known == distribution)


class ExpectedParameters:
    """What trial ``number`` will suggest next, in order, and the values sampled for them.

    ``entries``: ``(name, distribution)`` pairs, without single-valued distributions (Optuna does not
    ask the sampler for those). Nothing is drawn until the first entry's turn (:meth:`take`).
    """

    def __init__(self, number: int, entries: Entries, n_candidates: int) -> None:
        self.number, self.entries, self.n_candidates = number, list(entries), n_candidates
        self.position = 0  # the next entry to hand out
        self.drawn_from: int | None = None  # the entry whose turn drew the numbers of it and all after it
        self.state: Any = None  # the generator's state before that draw
        self.draws: np.ndarray | None = None  # [len(entries) - drawn_from, 2, n_candidates]
        self.history: object = None  # what the values were sampled from
        self.values: list[float] = []  # internal values of entries[values_from:]
        self.values_from = 0

    @property
    def done(self) -> bool:
        return self.position >= len(self.entries)

    def is_next(self, number: int, name: str, distribution: BaseDistribution) -> bool:
        """Whether trial ``number`` asking for ``name`` with ``distribution`` is the next expected entry."""
        if self.done or number != self.number:
            return False
        expected_name, expected = self.entries[self.position]
        return expected_name == name and same_distribution(expected, distribution)

    def take(self, rng: np.random.RandomState, history: object, sample: SampleEntries) -> float:
        """The next entry's internal value, sampled from ``history`` (any object that is the same object
        as long as the history is the same); on the first call the numbers of every entry left are drawn
        from ``rng``."""
        if self.draws is None:
            self.state, self.drawn_from = rng.get_state(), self.position
            self.draws = rng.random_sample((len(self.entries) - self.position, 2, self.n_candidates))
        assert self.drawn_from is not None
        if history is not self.history:  # the first call, or the history changed
            self.values = sample(self.entries[self.position:], self.draws[self.position - self.drawn_from:])
            self.history, self.values_from = history, self.position
        value = self.values[self.position - self.values_from]
        self.position += 1
        return value

    def settle(self, rng: np.random.RandomState) -> None:
        """Put ``rng`` where sampling the handed-out entries one at a time would have left it (a no-op
        when nothing was drawn, or every entry was handed out)."""
        if self.draws is None or self.done:
            return
        assert self.drawn_from is not None
        rng.set_state(self.state)
        rng.random_sample((self.position - self.drawn_from) * 2 * self.n_candidates)
        self.draws = None
