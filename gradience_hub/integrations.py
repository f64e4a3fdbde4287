"""Integrations with training loops: a transformers ``TrainerCallback`` that keeps the audit on
the model card while you train, so ``trainer.push_to_hub()`` publishes it.

    from gradience_hub.integrations import GradienceHubCallback
    trainer = Trainer(model=peft_model, args=args, ..., callbacks=[GradienceHubCallback()])

At each checkpoint save and at the end of training it audits the adapter in the output
directory (or the newest checkpoint when the output directory holds none yet) and writes the
card section into ``output_dir/README.md`` plus ``output_dir/gradience/*`` — the same files
``gradience-hub annotate`` writes for a local directory.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any

from gradience_hub.errors import GradienceError, MissingExtraError

logger = logging.getLogger(__name__)

try:
    from transformers import TrainerCallback
except ImportError as _exc:  # pragma: no cover - exercised only without the bench extra
    raise MissingExtraError("transformers") from _exc

_WRAPPED = "_gradience_wrapped"


def _has_adapter(directory: Path) -> bool:
    return (directory / "adapter_config.json").is_file()


def _newest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = [
        p
        for p in output_dir.glob("checkpoint-*")
        if p.is_dir() and p.name.split("-")[-1].isdigit() and _has_adapter(p)
    ]
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]), default=None)


class GradienceHubCallback(TrainerCallback):
    """Audit the LoRA adapter at each save and at train end; splice the card section into
    ``output_dir/README.md``.

    ``Trainer.push_to_hub`` rewrites README.md from its training summary before uploading, and
    then asks the PEFT model to update the card (``create_or_update_model_card``); the callback
    wraps that method on the model it is given, so the section is spliced back in after the
    rewrite and ends up on the Hub. Audit failures are logged, never raised: a card must not
    stop a training run.
    """

    def __init__(self, energy: float = 0.9, template_dir: str | None = None) -> None:
        self.energy = energy
        self.template_dir = template_dir
        self.last_report: Any = None

    # -- the card ---------------------------------------------------------------------------

    def annotate_dir(self, output_dir: str | Path) -> bool:
        """Audit the adapter in ``output_dir`` (or its newest checkpoint) and write the card
        section and gradience/* into ``output_dir``. Returns False when there is no adapter."""
        from gradience_hub.publish.annotate import write_local_card

        output = Path(output_dir)
        source = output if _has_adapter(output) else _newest_checkpoint(output)
        if source is None:
            return False
        try:
            result = write_local_card(
                source, output, energy=self.energy, template_dir=self.template_dir
            )
        except GradienceError as exc:
            logger.warning("gradience-hub: could not audit %s: %s", source, exc.message)
            return False
        self.last_report = result.audit
        return True

    def _wrap_card_update(self, model: Any) -> None:
        """Re-splice the section after every card write of ``model``.

        PEFT's ``save_pretrained`` updates the card BEFORE it writes the weights, so an audit
        there would read the previous weights: inside ``save_pretrained`` the audit waits until
        the save has finished. ``Trainer.create_model_card`` (push_to_hub) rewrites the card
        after the save and then calls ``create_or_update_model_card``, which audits at once.
        """
        card_update = getattr(model, "create_or_update_model_card", None)
        save = getattr(model, "save_pretrained", None)
        if card_update is None or save is None or getattr(card_update, _WRAPPED, False):
            return
        saving = threading.local()

        @functools.wraps(card_update)
        def create_or_update_model_card(output_dir: str, *args: Any, **kwargs: Any) -> Any:
            value = card_update(output_dir, *args, **kwargs)
            if not getattr(saving, "active", False):
                self.annotate_dir(output_dir)
            return value

        @functools.wraps(save)
        def save_pretrained(save_directory: str, *args: Any, **kwargs: Any) -> Any:
            saving.active = True
            try:
                value = save(save_directory, *args, **kwargs)
            finally:
                saving.active = False
            self.annotate_dir(save_directory)
            return value

        setattr(create_or_update_model_card, _WRAPPED, True)
        model.create_or_update_model_card = create_or_update_model_card
        model.save_pretrained = save_pretrained

    # -- TrainerCallback events ---------------------------------------------------------------

    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        """Hook the PEFT model's card update (used by save_pretrained and push_to_hub)."""
        if model is not None:
            self._wrap_card_update(model)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After a checkpoint save: audit it and update the output dir's card."""
        if getattr(state, "is_world_process_zero", True):
            self.annotate_dir(args.output_dir)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """At the end of training: audit the final adapter (or the newest checkpoint)."""
        if getattr(state, "is_world_process_zero", True):
            self.annotate_dir(args.output_dir)
