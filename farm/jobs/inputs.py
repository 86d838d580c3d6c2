"""Reading what people type, shared by the submission form and the API's query strings: whole numbers bounded in
length before Python converts them, and text free of control characters before it reaches Postgres.

Python refuses to convert integers of more than 4,300 digits (it raises ValueError), and Postgres refuses NUL in
text; either would surface as a 500 if user input reached it unchecked.
"""

from __future__ import annotations

import re

_WHOLE = re.compile(r"([+-]?)([0-9]+)")  # ASCII digits only: str.isdigit() also takes '²', which int() refuses
MAX_DIGITS = 18  # beyond every bound the farm uses; longer numbers count as ±10**18
DB_INT_MAX = 2**31 - 1  # the largest value of an INTEGER column: any number compared with one must not exceed it
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: never part of a name, a path or a search


def whole_number(raw: str) -> int | None:
    """`raw` as an integer, or None when it is not one. A number of more than MAX_DIGITS digits comes back as
    ±10**MAX_DIGITS, which every caller's upper (or lower) bound refuses, without converting all its digits."""
    match = _WHOLE.fullmatch(raw)
    if match is None:
        return None
    sign, digits = match.groups()
    digits = digits.lstrip("0") or "0"
    value = int(digits) if len(digits) <= MAX_DIGITS else 10**MAX_DIGITS
    return -value if sign == "-" else value


def shown(raw: str, limit: int = 40) -> str:
    """A user's value quoted in an error message, cut short: a 5,000-digit number is not repeated back."""
    return repr(raw if len(raw) <= limit else raw[:limit] + "…")


def has_control_characters(text: str) -> bool:
    return CONTROL.search(text) is not None
