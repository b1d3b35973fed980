"""Exceptions shared by the whole toolkit."""


class UserError(ValueError):
    """Bad input from a user (file, field, shape, value). The CLI prints it as one line, exit 2.

    Subclasses ``ValueError`` so library callers can catch it the usual way.
    """
