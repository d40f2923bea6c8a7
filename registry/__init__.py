"""The registry server: the OCI distribution-spec HTTP API on top of a storage driver."""
