"""Quantization audit (which ops are really integer); defined in ``runtimes.audit`` so converters can use it too."""

from runtimes.audit import QuantizationAudit, audit_model

__all__ = ["QuantizationAudit", "audit_model"]
