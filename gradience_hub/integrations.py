"""Integrations with training loops: a transformers ``TrainerCallback`` that keeps the audit on
the model card while you train, so ``trainer.push_to_hub()`` publishes it.

    from gradience_hub.integrations import GradienceHubCallback, GradienceTrainer
    trainer = GradienceTrainer(model=peft_model, args=args, ..., callbacks=[GradienceHubCallback()])

The callback alone (on any ``Trainer``) writes the card at every checkpoint and at the end of
training; :class:`GradienceTrainer` (or :class:`GradienceCardMixin` on your own trainer class)
also keeps it through ``trainer.save_model()`` and ``trainer.push_to_hub()``. Nothing patches the
model or the trainer.

At each checkpoint save and at the end of training it audits the adapter in the output
directory (or the newest checkpoint when the output directory holds none yet) and writes the
card section into ``output_dir/README.md`` plus ``output_dir/gradience/*`` — the same files
``gradience-hub annotate`` writes for a local directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gradience_hub.errors import GradienceError, MissingExtraError

logger = logging.getLogger(__name__)

try:
    from transformers import Trainer, TrainerCallback
except ImportError as _exc:  # pragma: no cover - exercised only without the bench extra
    raise MissingExtraError("transformers") from _exc


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

    Trainer events cover checkpoints and the end of training. ``Trainer.save_model`` and
    ``Trainer.push_to_hub`` fire no event after they write the card (push_to_hub rewrites README.md
    from its training summary, then uploads at once), and the callback never patches the user's
    model or trainer: to keep the section through those two, use :class:`GradienceCardMixin`
    (or :class:`GradienceTrainer`). Audit failures are logged, never raised: a card must not
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

    # -- TrainerCallback events ---------------------------------------------------------------

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After a checkpoint save: audit it and update the output dir's card."""
        if getattr(state, "is_world_process_zero", True):
            self.annotate_dir(args.output_dir)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """At the end of training: audit the final adapter (or the newest checkpoint)."""
        if getattr(state, "is_world_process_zero", True):
            self.annotate_dir(args.output_dir)


class GradienceCardMixin:
    """Mix into a ``Trainer`` subclass so ``save_model`` and ``push_to_hub`` keep the card section.

        class MyTrainer(GradienceCardMixin, Trainer): ...   # or SFTTrainer, Seq2SeqTrainer, ...

    ``save_model`` audits after the weights are written (PEFT writes its card before the
    weights, so auditing inside ``save_pretrained`` would read the previous ones), and
    ``create_model_card`` (which ``push_to_hub`` calls right before uploading) splices the section
    back into the card it has just rewritten. The settings of a :class:`GradienceHubCallback`
    among the trainer's callbacks are used; without one, the defaults.
    """

    def gradience_callback(self) -> GradienceHubCallback:
        """The trainer's :class:`GradienceHubCallback`, or a default one."""
        handler = getattr(self, "callback_handler", None)
        for callback in getattr(handler, "callbacks", []):
            if isinstance(callback, GradienceHubCallback):
                return callback
        return GradienceHubCallback()

    def save_model(self, output_dir: str | None = None, *args: Any, **kwargs: Any) -> None:
        """``Trainer.save_model``, then the card section for the adapter just written."""
        super().save_model(output_dir, *args, **kwargs)  # type: ignore[misc]
        if self._gradience_should_write():
            self.gradience_callback().annotate_dir(output_dir or self.args.output_dir)  # type: ignore[attr-defined]

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """``Trainer.create_model_card``, then the section spliced back into the new card."""
        super().create_model_card(*args, **kwargs)  # type: ignore[misc]
        if self._gradience_should_write():
            self.gradience_callback().annotate_dir(self.args.output_dir)  # type: ignore[attr-defined]

    def _gradience_should_write(self) -> bool:
        # Only the main process writes files, as Trainer itself does.
        is_main = getattr(self, "is_world_process_zero", None)
        return bool(is_main()) if callable(is_main) else True


class GradienceTrainer(GradienceCardMixin, Trainer):
    """``transformers.Trainer`` whose saved and pushed cards keep the gradience section."""
