"""SVD-truncated LoRA adapters in the format they came in, with the Eckart-Young error report and
a reload check: plan the ranks (:mod:`.plan`), write the adapter (:mod:`.write`), check it
(:mod:`.verify`), describe it (:mod:`.result`)."""

from gradience_hub.compress.plan import RankRule, build_config, plan_ranks
from gradience_hub.compress.result import CompressionResult, ModuleCompression, format_result
from gradience_hub.compress.verify import (
    VERIFIED_FILE,
    VERIFIED_NONE,
    VERIFIED_PEFT_CONFIG,
    VERIFIED_PEFT_LOAD,
    VERIFIED_SELF,
    self_check,
    verify_with_peft,
)
from gradience_hub.compress.write import compress, compress_adapter

__all__ = [
    "VERIFIED_FILE",
    "VERIFIED_NONE",
    "VERIFIED_PEFT_CONFIG",
    "VERIFIED_PEFT_LOAD",
    "VERIFIED_SELF",
    "CompressionResult",
    "ModuleCompression",
    "RankRule",
    "build_config",
    "compress",
    "compress_adapter",
    "format_result",
    "plan_ranks",
    "self_check",
    "verify_with_peft",
]
