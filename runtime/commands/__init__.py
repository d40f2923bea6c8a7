"""The container subcommands of ``pyreg`` (run, ps, logs, stop, kill, rm, exec): one module each."""
