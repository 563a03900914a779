"""What the fuzz tests share: the count of inputs tried per input path (printed at the end of
the run), and the two ways of making inputs that get furthest into a parser."""

from __future__ import annotations

from collections import Counter

from hypothesis import strategies as st

FUZZED: Counter[str] = Counter()


def noise(alphabet: str, max_size: int = 80) -> st.SearchStrategy[str]:
    """Text over a parser's own vocabulary."""
    return st.text(alphabet=st.sampled_from(list(alphabet)), max_size=max_size)


def cut_and_continue(texts: st.SearchStrategy[str], tail: st.SearchStrategy[str]):
    """A valid input cut short anywhere and continued with noise."""
    return texts.flatmap(lambda t: st.tuples(st.integers(0, len(t)), tail).map(
        lambda cut: t[:cut[0]] + cut[1]))
