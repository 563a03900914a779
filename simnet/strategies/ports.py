"""Hypothesis strategies for container port lists, as apps declare them (``apps[].ports``).

Diego gives each container port a proxy port from 61001 upward and never hands out 61443 (the
container-to-container TLS port), so port lists that reach into that range are drawn on
purpose: they are where allocation can go wrong.
"""

from __future__ import annotations

from hypothesis import strategies as st

from simnet.model.ports import C2C_TLS_PORT


def port_lists(max_size: int = 20, unique: bool = True) -> st.SearchStrategy[list[int]]:
    """App ports: anywhere in 1-65535, biased to 8080 and the proxy range; never 61443."""
    port = st.one_of(st.integers(1, 65535), st.integers(61000, 61010), st.just(8080)).filter(
        lambda p: p != C2C_TLS_PORT)
    return st.lists(port, min_size=1, max_size=max_size, unique=unique)
