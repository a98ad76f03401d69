"""Keep Python's cyclic garbage collector off the objects a worker holds for its whole life.

A worker imports torch, SciPy, scikit-learn, Optuna and SQLAlchemy: hundreds of thousands of objects
that the collector tracks and that live as long as the process. Every full (generation 2) collection
walks all of them, and one comes every few dozen coarse trials, inside whatever the worker happens
to be doing: on the benchmark machine it lands in TPE's sampling and doubles it for the level it falls
in (``benchmarks/bench_campaign.py``'s ``GC`` column counts the collections' time in a level).
:func:`freeze_long_lived_objects` collects once and then moves every object alive into the collector's
permanent generation (:func:`gc.freeze`), which later collections skip. It is for worker processes
(``plab campaign run``, ``plab worker``): an object alive at that moment is never collected
afterwards even if it becomes garbage in a reference cycle, so a notebook that runs campaigns one
after another through the Python API is better off without it (``CampaignRunner`` does it only when
asked, ``freeze_gc=True``). A forked sampling process inherits the frozen objects too.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_long_lived_objects"]

_frozen = False


def freeze_long_lived_objects() -> bool:
    """Collect garbage once, then :func:`gc.freeze` every object alive; once per process.
    True if this call froze them (False: an earlier call did)."""
    global _frozen
    if _frozen:
        return False
    gc.collect()
    gc.freeze()
    _frozen = True
    return True
