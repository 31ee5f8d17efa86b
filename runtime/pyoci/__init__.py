"""pyoci: an OCI runtime-spec v1.3.0 container runtime with a runc-compatible CLI."""

__version__ = "0.1.0"
OCI_VERSION = "1.3.0"
