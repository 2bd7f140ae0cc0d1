"""The project's user-facing error type.

Anything raised as :class:`UserError` (or a subclass) is bad input or an
unmet precondition: the CLI prints its message as one line and exits 2,
with no traceback. Bugs stay ordinary exceptions.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unmet precondition; the message is one line naming the problem."""
