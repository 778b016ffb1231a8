"""Command-line helpers that behave like the C library Postfix is built on.

Postfix's tools parse their flags with getopt(3) in POSIX mode (option
parsing stops at the first non-option) and read numbers with atoi(3), which
ignores trailing junk ("5x" is 5) and reads "abc" as 0.  Scripts depend on
those details, so we reproduce them, including glibc's wording of getopt's
own complaints.
"""

import re

# glibc's getopt complaints (printed as "prog: <text>" before the usage line).
INVALID_OPTION = "invalid option -- '%s'"
MISSING_ARGUMENT = "option requires an argument -- '%s'"
LONG_MISSING_ARGUMENT = "option '--%s' requires an argument"
LONG_NO_ARGUMENT = "option '--%s' doesn't allow an argument"

_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]*)")
_INT_MAX = 2 ** 31 - 1
_LONG_MAX = 2 ** 63 - 1


class UsageError(Exception):
    """Bad command line; .complaint is getopt's own line, or None."""

    def __init__(self, complaint=None):
        super().__init__(complaint)
        self.complaint = complaint


class GetOpt:
    """getopt(3) with a leading '+' (POSIX order), one option at a time.

        parser = GetOpt(args, "+cm:v")
        for letter, value in parser:        # value is None for a flag
            ...
        operands = parser.operands

    Iterating raises UsageError at an unknown option or a missing argument,
    so -- as with the C library -- options before it have already been
    acted on (and may have been fatal first).

    Our extensions are long options, named in long_options as for Python's
    getopt ("report=" takes a value, "integrity" does not); they come back
    as ("--report", "json").  A value follows "=" or is the next argument.
    Any other "--word" is what getopt(3) makes of it -- unknown letters,
    the first being '-' -- so that a command line Postfix's tool rejects is
    rejected with the same words.
    """

    def __init__(self, args, optstring, long_options=()):
        self.args = list(args)
        self.operands = None
        self.wants_arg = {}
        letters = optstring.lstrip("+")
        for i, ch in enumerate(letters):
            if ch != ":":
                self.wants_arg[ch] = letters[i + 1:i + 2] == ":"
        self.long_wants_arg = {name.rstrip("="): name.endswith("=")
                               for name in long_options}

    def __iter__(self):
        args = self.args
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                i += 1
                break
            if not arg.startswith("-") or arg == "-":
                break
            name, equals, value = arg[2:].partition("=")
            if arg.startswith("--") and name in self.long_wants_arg:
                if not self.long_wants_arg[name]:
                    if equals:
                        raise UsageError(LONG_NO_ARGUMENT % name)
                    value = None
                elif not equals:
                    if i + 1 >= len(args):
                        raise UsageError(LONG_MISSING_ARGUMENT % name)
                    i += 1
                    value = args[i]
                yield "--" + name, value
                i += 1
                continue
            j = 1
            while j < len(arg):
                letter = arg[j]
                if letter not in self.wants_arg:
                    raise UsageError(INVALID_OPTION % letter)
                if not self.wants_arg[letter]:
                    yield letter, None
                    j += 1
                    continue
                if j + 1 < len(arg):
                    value = arg[j + 1:]
                elif i + 1 < len(args):
                    i += 1
                    value = args[i]
                else:
                    raise UsageError(MISSING_ARGUMENT % letter)
                yield letter, value
                break
            i += 1
        self.operands = args[i:]


def parse(args, optstring, long_options=()):
    """All options at once: (list of (letter, value), operands)."""
    parser = GetOpt(args, optstring, long_options)
    pairs = list(parser)
    return pairs, parser.operands


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
