"""Adapter I/O: SOURCE parsing, adapter_config.json with PEFT's pattern semantics, and LoRA factor
pairs streamed per module with their scale.

A PEFT LoRA adapter is a directory with ``adapter_config.json`` and ``adapter_model.safetensors``
(or the legacy ``adapter_model.bin``). :func:`load` opens any SOURCE; :meth:`Adapter.modules`
streams :class:`LoraModule` objects (``dW = scale * B @ A``).
"""

from gradience_hub.adapter.config import (
    BIN_NAME,
    CONFIG_NAME,
    PEFT_PREFIX,
    SAFETENSORS_NAME,
    AdapterConfig,
    list_adapters,
    read_config,
    select_adapter,
    weights_file,
)
from gradience_hub.adapter.source import SourceInfo, SourceSpec, parse_source
from gradience_hub.adapter.weights import (
    Adapter,
    LoraModule,
    UnreadableModule,
    layer_index,
    module_type,
    open_adapter,
    open_lora_file,
    strip_prefix,
    widen,
)

__all__ = [
    "BIN_NAME",
    "CONFIG_NAME",
    "PEFT_PREFIX",
    "SAFETENSORS_NAME",
    "Adapter",
    "AdapterConfig",
    "LoraModule",
    "SourceInfo",
    "SourceSpec",
    "UnreadableModule",
    "layer_index",
    "list_adapters",
    "module_type",
    "open_adapter",
    "open_lora_file",
    "parse_source",
    "read_config",
    "select_adapter",
    "strip_prefix",
    "weights_file",
    "widen",
]
