"""Command-line helpers that behave like the C library Postfix is built on.

Postfix's tools parse their flags with getopt(3) in POSIX mode (option
parsing stops at the first non-option) and read numbers with atoi(3), which
ignores trailing junk ("5x" is 5) and reads "abc" as 0.  Scripts depend on
those details, so we reproduce them, including glibc's wording of getopt's
own complaints.
"""

import getopt
import re

# glibc's getopt complaints (printed as "prog: <text>" before the usage line).
INVALID_OPTION = "invalid option -- '%s'"
MISSING_ARGUMENT = "option requires an argument -- '%s'"

_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]*)")
_INT_MAX = 2 ** 31 - 1
_LONG_MAX = 2 ** 63 - 1


class UsageError(Exception):
    """Bad command line; .complaint is getopt's own line, or None."""

    def __init__(self, complaint=None):
        super().__init__(complaint)
        self.complaint = complaint


def parse(args, optstring):
    """Parse args like getopt(3) with a leading '+' (POSIX order).

    Returns (options, operands) where options is a list of (letter, value)
    pairs, value being None for flags.  Raises UsageError for an unknown
    option or a missing argument.
    """
    wants_arg = {}
    letters = optstring.lstrip("+:")
    for i, ch in enumerate(letters):
        if ch != ":":
            wants_arg[ch] = letters[i + 1:i + 2] == ":"
    try:
        pairs, operands = getopt.getopt(list(args), letters)
    except getopt.GetoptError as err:
        letter = err.opt or "?"
        if letter in wants_arg:
            raise UsageError(MISSING_ARGUMENT % letter) from None
        raise UsageError(INVALID_OPTION % letter) from None
    options = [(flag[1], value if wants_arg[flag[1]] else None)
               for flag, value in pairs]
    return options, operands


def atoi(text):
    """C atoi(): leading blanks, a sign, digits; anything after is ignored.

    Out-of-range values behave as with glibc (strtol clamps to a long, the
    result is truncated to an int).
    """
    digits = _ATOI.match(text).group(1)
    if digits in ("", "+", "-"):
        return 0
    value = max(-_LONG_MAX - 1, min(_LONG_MAX, int(digits)))
    value &= 0xFFFFFFFF
    return value - 2 ** 32 if value > _INT_MAX else value


def alldig(text):
    """Postfix's alldig(): non-empty and ASCII digits only."""
    return bool(text) and all("0" <= ch <= "9" for ch in text)


def split_list(text):
    """Split a command list such as "helo, MAIL rcpt" like Postfix does.

    Separators are blanks, CR, LF and commas; empty items are skipped.
    """
    return [item for item in re.split(r"[ \t\r\n,]+", text) if item]
