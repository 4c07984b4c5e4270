"""The one exception type for bad input: the message names the input and the fix."""


class InputError(Exception):
    """Bad user input (a config key, a file, a column): the stage stops before writing anything.

    The message is one line that names the offending key or file and says how to fix it. The top-level
    scripts turn it into a one-line error on stderr and exit status 2 (see ``elusive.core.cli.run``).
    """
