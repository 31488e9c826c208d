"""What text JayAvatar accepts from a client, and how it shows text that was stored before.

Accepted: valid Unicode without lone surrogate halves (a JSON "\\ud800" decodes to one, and no
UTF-8 encoder takes it), without NUL or other control characters (C0, DEL, C1) except newline,
carriage return and tab in multi-line text. Records stored before these checks existed are
shown with U+FFFD in place of what cannot be encoded (`scrub`).
"""

from __future__ import annotations

import re

_MULTILINE_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def problem(value: str, *, multiline: bool = True) -> str | None:
    """A sentence saying what is wrong with `value`, or None if it is acceptable. It names the
    position and code point, never echoes the character itself."""
    found = (_MULTILINE_BAD if multiline else _LINE_BAD).search(value)
    if found is None:
        return None
    code = ord(found.group())
    if 0xD800 <= code <= 0xDFFF:
        what = "half of a UTF-16 surrogate pair with no other half (not a character)"
    elif code == 0:
        what = "NUL"
    else:
        what = "a control character"
    allowed = "newline and tab" if multiline else "none"
    return (f"character {found.start() + 1} is U+{code:04X}, {what}; send valid Unicode text "
            f"(control characters allowed: {allowed})")


def scrub(value: str) -> str:
    """`value` with every lone surrogate replaced by U+FFFD, so that it encodes as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value
