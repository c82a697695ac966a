"""`portaudit diagnose HOST:PORT`: probe a target as the client would, classify, explain."""

from auditor.diagnose.run import Options, diagnose

__all__ = ["Options", "diagnose"]
