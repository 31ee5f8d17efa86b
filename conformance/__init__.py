"""Black-box conformance checks for OCI runtime-spec v1.3.0 runtimes (runc-style CLI)."""
