"""The ``pyreg`` command: push, pull and friends, and the entry point that wires serve and run."""
