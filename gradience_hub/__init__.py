"""gradience-hub: spectral audits of LoRA adapters, compression evidence, and publishing it.

The audit path imports numpy and safetensors only; torch and friends are imported lazily by
the commands that need them (``bench``, the reload check of ``compress``).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
