"""The ``arbiter`` command: noun then verb, ``--json`` everywhere, one small module per noun."""
