"""gridwhistle's services: each sub-package is an independent process with its own database."""
