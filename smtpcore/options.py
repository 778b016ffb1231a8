"""Command-line helpers that behave like the C library Postfix is built on.

Postfix's tools parse their flags with getopt(3) in POSIX mode (option
parsing stops at the first non-option) and read numbers with atoi(3), which
ignores trailing junk ("5x" is 5) and reads "abc" as 0.  Scripts depend on
those details, so we reproduce them.

The parsing itself is done by the standard library's getopt.getopt(), which
already works in POSIX order: clusters such as -cm5, a value in the same or
the next argument, "--" ending the options, a lone "-" being an operand.
GetOpt wraps it to add what getopt(3) does and Python's getopt does not:

* options come one at a time, and those before a bad one are all handed
  out before the complaint, so an earlier fatal value is reported first;
* the complaint is glibc's own wording, not Python's;
* long options (our extensions) must be spelt out: Postfix's tools have
  none, so to them any "--word" is the unknown letter '-'.
"""

import getopt
import os
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
    Any other "--word", an abbreviation included, is what getopt(3) makes
    of it -- unknown letters, the first being '-' -- so that a command line
    Postfix's tool rejects is rejected with the same words.
    """

    def __init__(self, args, optstring, long_options=()):
        self.args = list(args)
        self.operands = None
        self.letters = optstring[1:] if optstring.startswith("+") else optstring
        self.long_wants_arg = {name.rstrip("="): name.endswith("=")
                               for name in long_options}
        # Python's getopt takes any unique abbreviation ("--he" for
        # "--help").  A twin of each name that no command line can spell
        # (an argument holds no NUL) makes every abbreviation ambiguous, so
        # only the exact names get through.
        self.long_options = list(long_options) + [name + "\0"
                                                  for name in self.long_wants_arg]

    def __iter__(self):
        try:
            pairs, operands = self._getopt(self.args)
            failure = None
        except getopt.GetoptError as err:
            pairs, failure = self._before(err)
        for option, value in pairs:
            yield self._pair(option, value)
        if failure is not None:
            raise failure
        self.operands = operands

    def _getopt(self, args):
        return getopt.getopt(args, self.letters, self.long_options)

    def _before(self, err):
        """The options before the bad one, and the UsageError for it.

        getopt() tells neither, so: the longest run of whole arguments
        that parses, then the longest start of the bad cluster (its letters
        before an unknown one can only be flags).
        """
        args = self.args
        for end in range(len(args) - 1, -1, -1):
            try:
                pairs = self._getopt(args[:end])[0]
                break
            except getopt.GetoptError:
                pass
        bad = args[end]
        if bad.startswith("--"):
            name = bad[2:].partition("=")[0]
            if name not in self.long_wants_arg:
                complaint = INVALID_OPTION % "-"
            elif self.long_wants_arg[name]:
                complaint = LONG_MISSING_ARGUMENT % name
            else:
                complaint = LONG_NO_ARGUMENT % name
            return pairs, UsageError(complaint)
        for cut in range(len(bad) - 1, 1, -1):
            try:
                pairs += self._getopt([bad[:cut]])[0]
                break
            except getopt.GetoptError:
                pass
        letter = err.opt
        if letter != ":" and letter in self.letters:
            complaint = MISSING_ARGUMENT % letter
        else:
            # getopt(3) reads bytes: of a non-ASCII letter, it names the first.
            complaint = INVALID_OPTION % os.fsdecode(os.fsencode(letter)[:1])
        return pairs, UsageError(complaint)

    def _pair(self, option, value):
        """getopt's ("-m", "5") / ("-c", "") as ("m", "5") / ("c", None)."""
        if option.startswith("--"):
            wants_arg = self.long_wants_arg[option[2:]]
        else:
            option = option[1:]
            wants_arg = self.letters.startswith(":", self.letters.index(option) + 1)
        return option, (value if wants_arg else None)


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
