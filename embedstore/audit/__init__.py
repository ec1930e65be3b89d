"""`embed audit`: what is wrong with a dataset, read off its stored vectors."""

from __future__ import annotations

from ..reports.audit import write_audit_report
from .run import KINDS, AuditReport, run_audit

__all__ = ["AuditReport", "KINDS", "run_audit", "write_audit_report"]
