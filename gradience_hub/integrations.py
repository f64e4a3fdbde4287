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

Telemetry: at each evaluation and checkpoint save it takes the spectral snapshot of the
model's LoRA factors in memory (``telemetry.snapshot``: utilization, stable rank, energy rank,
overall and per module type) and appends it to a JSONL file, by default
``output_dir/gradience/telemetry.jsonl`` (``telemetry=PATH`` to move it, ``telemetry=None``
for none), which ``gradience-hub monitor`` reads; the card then shows utilization over the
steps (``gradience/utilization_steps.png``). The same figures go into the Trainer's logs as
``gradience/utilization_mean``, ``gradience/attention/utilization_mean``, ...: with
:class:`GradienceTrainer` (or :class:`GradienceCardMixin`) an evaluation's snapshot is in the
evaluation's own log call, so every ``report_to`` tracker records it; with the callback alone
on a plain ``Trainer`` (whose reporting callbacks run before user callbacks) they are added to
``state.log_history`` and to the next log's ``logs`` for the callbacks registered after it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gradience_hub.errors import GradienceError, MissingExtraError
from gradience_hub.markers import TELEMETRY_LOG, TELEMETRY_PICTURE
from gradience_hub.record.telemetry import append_event, event_line
from gradience_hub.telemetry import KEYS, ModuleFactors, log_metrics, snapshot

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


def lora_factors(model: Any) -> Iterator[ModuleFactors]:
    """The active adapter's LoRA factors of a peft model in memory, as float32 numpy (peft's
    ``LoraLayer``: ``lora_A[name].weight``, ``lora_B[name].weight``, ``scaling[name]``)."""
    from gradience_hub.adapter.weights import UnreadableModule, conv_factors, module_type

    for name, module in model.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if lora_a is None or lora_b is None or not hasattr(lora_a, "keys"):
            continue
        active = getattr(module, "active_adapters", None) or list(lora_a.keys())
        adapter = next((a for a in active if a in lora_a and a in lora_b), None)
        if adapter is None or not hasattr(lora_a[adapter], "weight"):
            continue
        A = lora_a[adapter].weight.detach().float().cpu().numpy()
        B = lora_b[adapter].weight.detach().float().cpu().numpy()
        if A.ndim != 2 or B.ndim != 2:
            if not 3 <= A.ndim == B.ndim <= 5:
                continue
            try:  # conv LoRA: the update's matrices, as the audit reads them from the files
                A, B, _ = conv_factors(name, A, B)
            except UnreadableModule:
                continue
        scale = float(getattr(module, "scaling", {}).get(adapter, 1.0))
        clean = name.removeprefix("base_model.model.")
        yield ModuleFactors(clean, module_type(clean), B, A, scale)


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

    def __init__(
        self,
        energy: float = 0.9,
        template_dir: str | None = None,
        telemetry: str | Path | None = TELEMETRY_LOG,
    ) -> None:
        self.energy = energy
        self.template_dir = template_dir
        # a relative path is under the Trainer's output_dir; None records no telemetry
        self.telemetry = telemetry
        self.last_report: Any = None
        self.last_snapshot: dict[str, Any] | None = None
        self._pending: dict[str, float] = {}  # scalars not yet in a log call
        self._snapshot_step: int | None = None  # the step whose snapshot is recorded

    # -- telemetry ------------------------------------------------------------------------

    def telemetry_path(self, output_dir: str | Path) -> Path | None:
        """Where the JSONL goes (None: telemetry off)."""
        if self.telemetry is None:
            return None
        path = Path(self.telemetry)
        return path if path.is_absolute() else Path(output_dir) / path

    def record_snapshot(self, args: Any, state: Any, model: Any, event: str) -> dict[str, float]:
        """Take the snapshot of ``model``'s LoRA factors at this step, append it to the JSONL
        (once per step) and return its log scalars (empty when off or without LoRA layers).
        Failures are logged, never raised."""
        path = self.telemetry_path(args.output_dir)
        step = int(getattr(state, "global_step", 0))
        if path is None or model is None or not getattr(state, "is_world_process_zero", True):
            return {}
        if self._snapshot_step == step and self.last_snapshot is not None:
            return log_metrics(self.last_snapshot)
        try:
            modules = list(lora_factors(model))
            if not modules:
                return {}
            snap = snapshot(modules, self.energy)
            append_event(path, event_line(step, getattr(state, "epoch", None), event, snap))
            self._plot(path, Path(args.output_dir))
        except Exception as exc:  # telemetry must never stop a training run
            logger.warning("gradience-hub: telemetry at step %s failed: %s", step, exc)
            return {}
        self.last_snapshot, self._snapshot_step = snap, step
        return log_metrics(snap)

    def _plot(self, log: Path, output_dir: Path) -> None:
        from gradience_hub.publish.telemetry_plot import utilization_over_steps
        from gradience_hub.record.telemetry import read_points

        points, _ = read_points(log)
        utilization_over_steps(points, output_dir / TELEMETRY_PICTURE)

    def take_pending(self) -> dict[str, float]:
        """The snapshot scalars no log call has carried yet (and forget them)."""
        pending, self._pending = self._pending, {}
        return pending

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After an evaluation: the snapshot into the JSONL and the logs."""
        scalars = self.record_snapshot(args, state, kwargs.get("model"), "evaluate")
        self._deliver(state, scalars, kwargs.get("metrics"))

    def _deliver(self, state: Any, scalars: dict[str, float], metrics: Any = None) -> None:
        if not scalars:
            return
        history = getattr(state, "log_history", None)
        step = getattr(state, "global_step", None)
        last = history[-1] if history else None
        if isinstance(last, dict) and last.get("step") == step and "gradience/" + KEYS[0] in last:
            return  # the mixin's log() already carried them
        if isinstance(metrics, dict):
            metrics.update(scalars)  # what trainer.evaluate() returns
        if isinstance(history, list):
            history.append({**scalars, "step": step})
        self._pending.update(scalars)

    def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Add the pending snapshot scalars to ``logs`` for the callbacks after this one."""
        logs = kwargs.get("logs")
        if isinstance(logs, dict) and self._pending:
            logs.update(self.take_pending())

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
        except Exception as exc:
            # A card must never stop a training run, not even through a bug of ours: say so
            # (the traceback with debug logging) and let the run go on.
            logger.warning(
                "gradience-hub: could not write the card for %s (internal error %s: %s; "
                "please report it)",
                source,
                type(exc).__name__,
                exc,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )
            return False
        self.last_report = result.audit
        return True

    # -- TrainerCallback events ---------------------------------------------------------------

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After a checkpoint save: the telemetry snapshot, then audit the checkpoint and
        update the output dir's card."""
        if getattr(state, "is_world_process_zero", True):
            scalars = self.record_snapshot(args, state, kwargs.get("model"), "save")
            self._deliver(state, scalars)
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

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """``Trainer.log`` with the telemetry scalars: an evaluation's log call takes the
        snapshot now (so its trackers record it at the evaluation's step); any other carries
        the scalars of a snapshot taken since the last log."""
        callback = self.gradience_callback()
        if any(str(key).startswith("eval_") for key in logs):
            state, model = self.state, self.model  # type: ignore[attr-defined]
            logs.update(callback.record_snapshot(self.args, state, model, "evaluate"))  # type: ignore[attr-defined]
        logs.update(callback.take_pending())
        super().log(logs, *args, **kwargs)  # type: ignore[misc]

    def _gradience_should_write(self) -> bool:
        # Only the main process writes files, as Trainer itself does.
        is_main = getattr(self, "is_world_process_zero", None)
        return bool(is_main()) if callable(is_main) else True


class GradienceTrainer(GradienceCardMixin, Trainer):
    """``transformers.Trainer`` whose saved and pushed cards keep the gradience section."""
