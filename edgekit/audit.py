"""Quantization audit (which ops are really integer); defined in ``edgekit.runtimes.audit`` so the converters
can use it too."""

from edgekit.runtimes.audit import QuantizationAudit, audit_model

__all__ = ["QuantizationAudit", "audit_model"]
