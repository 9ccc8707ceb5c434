# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""A command line as a dataclass: `HfArgumentParser` for the options, plus what it cannot express (a positional,
a flag that takes no value, `nargs="*"`) added to the same parser by hand as `init=False` fields."""

import dataclasses
from collections.abc import Sequence

from transformers import HfArgumentParser


def parse_into_dataclass(
    parser: HfArgumentParser, argv: Sequence[str] | None = None, remaining: bool = False
):
    """The parser's one dataclass from `argv`. argparse's own parse (so an unknown option is its usual
    "unrecognized arguments" error); a value the dataclass's `__post_init__` refuses (`ValueError` naming the
    option) is a usage error too: exit 2. The `init=False` fields are filled from the arguments added by hand.
    With `remaining`, the arguments it does not know are returned too, `(dataclass, rest)`, for another parser."""
    (dtype,) = parser.dataclass_types
    if remaining:
        namespace, rest = parser.parse_known_args(argv)
    else:
        namespace, rest = parser.parse_args(argv), []
    fields = dataclasses.fields(dtype)
    try:
        args = dtype(**{f.name: getattr(namespace, f.name) for f in fields if f.init})
    except ValueError as error:
        parser.error(str(error))
    for f in fields:
        if not f.init:
            setattr(args, f.name, getattr(namespace, f.name))
    return (args, rest) if remaining else args
