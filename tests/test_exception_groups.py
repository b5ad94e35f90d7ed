"""The one way exception groups are unwrapped (unmute_trio/exception_groups.py)."""

from __future__ import annotations

import pytest
import trio

from unmute_trio.exception_groups import first_leaf, leaves, raise_sole_failure


def nested() -> BaseExceptionGroup[BaseException]:
    inner = BaseExceptionGroup("inner", [ValueError("a"), KeyError("b")])
    return BaseExceptionGroup("outer", [inner, TypeError("c")])


def test_leaves_flatten_nested_groups_in_order() -> None:
    assert [type(e) for e in leaves(nested())] == [ValueError, KeyError, TypeError]
    assert isinstance(first_leaf(nested()), ValueError)


async def test_the_sole_failure_is_raised_without_the_group_as_its_context() -> None:
    async def fail() -> None:
        raise ValueError("the real one")

    with pytest.raises(ValueError, match="the real one") as caught:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)  # cancelled by the failure
                nursery.start_soon(fail)
        except BaseExceptionGroup as group:
            raise_sole_failure(group)
    assert not isinstance(caught.value.__context__, BaseExceptionGroup)


def test_several_failures_keep_the_group() -> None:
    group = BaseExceptionGroup("two", [ValueError("a"), ValueError("b")])
    with pytest.raises(BaseExceptionGroup):
        raise_sole_failure(group)
