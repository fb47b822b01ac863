"""The command line: ``app`` (the commands), ``flags`` (options generated from the config
dataclasses), ``surgery`` (``cut`` and ``verify``), ``bench`` (``bench``). The entry point is
``interlace.cli.app:app``."""
