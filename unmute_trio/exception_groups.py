"""Exception groups, unwrapped one way everywhere.

trio nurseries raise ``BaseExceptionGroup``s; callers of a service client or a session want the
one failure inside (a ``ServiceTimeout``, not a group of one). These helpers find it, and
re-raise it without chaining the group as its ``__context__``.
"""

from __future__ import annotations

from typing import NoReturn, TypeVar

import trio

E = TypeVar("E", bound=BaseException)


def leaves(group: BaseExceptionGroup[E]) -> list[E]:
    """Every exception of a (possibly nested) group that is not itself a group, in order."""
    out: list[E] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(leaves(exc))
        else:
            out.append(exc)
    return out


def first_leaf(group: BaseExceptionGroup[E]) -> E:
    """The first leaf, as ``except*`` delivers a group of one kind of failure."""
    return leaves(group)[0]


def reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` from inside an ``except`` block, keeping its own ``__context__`` (raising
    it there would otherwise chain the group being handled)."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc


def raise_sole_failure(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the one real failure of a nursery's group (the other leaves are
    ``trio.Cancelled``). Several real failures, or KeyboardInterrupt/SystemExit, re-raise the
    group unchanged: that is a bug or a shutdown, and nothing should be hidden."""
    found = leaves(group)
    real = [e for e in found if not isinstance(e, trio.Cancelled)]
    if len(real) > 1 or any(isinstance(e, (KeyboardInterrupt, SystemExit)) for e in real):
        raise group
    reraise(real[0] if real else found[0])
