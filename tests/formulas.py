"""Hypothesis strategies for formula trees of the reference model (``model.evaluate``)."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st
from model import CMP_OPS, REDUCTIONS, Tree


def formula_trees(names: Sequence[str], max_leaves: int = 10) -> st.SearchStrategy[Tree]:
    """Trees of every form of the language over ``names`` and small integers."""
    leaves = st.one_of(
        st.tuples(st.just("num"), st.integers(0, 3)),
        st.tuples(st.just("name"), st.sampled_from(list(names))),
    )

    def extend(inner: st.SearchStrategy[Tree]) -> st.SearchStrategy[Tree]:
        parts = st.lists(inner, min_size=2, max_size=3).map(tuple)
        chain = st.integers(1, 3).flatmap(
            lambda n: st.tuples(
                st.just("cmp"),
                st.lists(st.sampled_from(CMP_OPS), min_size=n, max_size=n).map(tuple),
                st.lists(inner, min_size=n + 1, max_size=n + 1).map(tuple),
            )
        )
        return st.one_of(
            st.tuples(st.just("neg"), inner),
            st.tuples(st.just("bin"), st.sampled_from(["+", "-", "*", "/"]), inner, inner),
            st.tuples(st.just("not"), inner),
            st.tuples(st.sampled_from(["and", "or"]), parts),
            chain,
            st.tuples(st.just("where"), inner, inner, inner),
            st.tuples(st.just("reduce"), st.sampled_from(REDUCTIONS), inner),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)
