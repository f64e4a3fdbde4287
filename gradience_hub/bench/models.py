"""The base model loaded once per process, LoRA adapters swapped in and out with peft.

Loading the base model dominated a posthoc bench (once per cell); a :class:`ModelPool` loads
it the first time a cell needs it and keeps it for every later cell in the same process. The
first adapter wraps it in a ``PeftModel`` and stays loaded (the "resident" one); every other
adapter is added with ``load_adapter``, made active with ``set_adapter`` while it is scored and
removed with ``delete_adapter`` afterwards, so memory holds at most two adapters. The base model
is scored under ``disable_adapter()`` once a ``PeftModel`` exists, which is the base's own
weights and head (the original module of every ``modules_to_save`` wrapper).

Nothing here is serialised: an executor ships the plain :class:`~gradience_hub.bench.cells.
CellRunner`, and each process builds its own pool.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gradience_hub.bench.config import BenchConfig
from gradience_hub.bench.tasks import TaskData
from gradience_hub.bench.train import LoadedModel, load_base

# Weights that the checkpoint lacks (a new classification head) are initialised under this
# seed when the base model is loaded for evaluation: the base-model control then scores the
# same head in every process, and an adapter's saved head replaces it.
EVAL_INIT_SEED = 0


class ModelPool:
    """One process's base model and the adapters loaded onto it."""

    def __init__(self, config: BenchConfig, task: TaskData, device: str) -> None:
        self.config = config
        self.task = task
        self.device = device
        self._base: LoadedModel | None = None
        self._peft: Any = None
        self._resident: str | None = None
        # peft keeps adapters in ModuleDicts, whose keys cannot hold '.': internal names.
        self._names = (f"adapter{i}" for i in itertools.count())
        self.base_loads = 0

    def _loaded_base(self) -> LoadedModel:
        if self._base is None:
            from transformers import set_seed

            set_seed(EVAL_INIT_SEED)
            self._base = load_base(self.config, self.task, self.device)
            self._base.model.eval()
            self.base_loads += 1
        return self._base

    @contextmanager
    def base(self) -> Iterator[LoadedModel]:
        """The base model without any adapter."""
        base = self._loaded_base()
        if self._peft is None:
            yield base
            return
        with self._peft.disable_adapter():
            yield LoadedModel(model=self._peft, tokenizer=base.tokenizer, path=base.path)

    @contextmanager
    def adapter(self, adapter_dir: Path) -> Iterator[LoadedModel]:
        """The base model with the adapter saved at ``adapter_dir`` active (eval mode)."""
        base = self._loaded_base()
        name = next(self._names)
        with warnings.catch_warnings():
            # transformers deprecation notices raised from inside peft, not ours to act on
            warnings.simplefilter("ignore", FutureWarning)
            if self._peft is None:
                from peft import PeftModel

                self._peft = PeftModel.from_pretrained(
                    base.model, str(adapter_dir), adapter_name=name
                )
                self._resident = name
            else:
                self._peft.load_adapter(str(adapter_dir), adapter_name=name)
            self._peft.set_adapter(name)
        self._peft.eval()
        try:
            yield LoadedModel(model=self._peft, tokenizer=base.tokenizer, path=base.path)
        finally:
            if name != self._resident:
                assert self._resident is not None
                self._peft.set_adapter(self._resident)
                self._peft.delete_adapter(name)
