"""hrtrack command line and local development stack."""
