# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Checks of option values shared by the configurations and commands, so every refusal reads the same."""

from collections.abc import Callable, Mapping


def check_positive_integers(values: Mapping[str, object], option: Callable[[str], str] = str) -> None:
    """A `ValueError` naming the first of `values` (name -> value) that is not an integer >= 1 (a bool is not one;
    None means unset and passes), the name spelled by `option` (e.g. as its command-line option)."""
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{option(name)} must be a positive integer, got {value!r}")
