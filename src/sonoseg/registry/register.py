"""Registering an evaluated model in the MLflow registry and moving the ``champion`` alias through the gate.

Every evaluated model becomes a new version of ``model_name`` with alias ``challenger``, version tags
(method, label ratio, dataset, data sha256, git commit, test split sha256, every test metric as
``test.<key>``) and a model card as its description. The gate (:mod:`sonoseg.registry.gate`) compares it
with the current champion, read back from the champion version's tags; ``champion`` moves only when the
gate says so. The decision and its reason go to the version's tags (``promotion.decision``,
``promotion.reason``), its description and the returned promotion record.

Two processes registering at once must not interleave "read the champion, decide, move the alias", or
an alias could end on a worse model. That section, together with the version creation, runs under a
file lock: beside the sqlite file for a sqlite registry, else at ``lock_path`` (for a server registry
shared by several machines, point it at a shared disk; the default lock in the temp folder serializes
one machine's processes only).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from sonoseg.registry.gate import SPLIT_KEY, Decision, PromotionPolicy, decide
from sonoseg.registry.pyfunc import log_segmentation_model

logger = logging.getLogger(__name__)

CHALLENGER, CHAMPION = "challenger", "champion"
METRIC_TAG_PREFIX = "test."


@dataclass(frozen=True)
class EvaluatedModel:
    """A trained and tested model and the facts the registry records about it.

    Attributes:
        checkpoint: the trainer checkpoint (``best.pt``).
        classes: label → class name, background included (``dataset.json``'s ``classes``).
        metrics: the test metrics (``metrics.json``), ``test_split_sha256`` included.
        run_id: the MLflow run that trained it (None when tracking was off).
        training: further training facts for the model card (n_labelled, input_size, best_val_dice...).
        dvc_data: the DVC hashes (``dvc.lock``) of the data training read, by path; empty without DVC.
    """

    checkpoint: Path
    classes: dict[str, str]
    metrics: dict[str, Any]
    method: str
    dataset: str
    label_ratio: float
    data_sha256: str
    git_commit: str
    run_id: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    dvc_data: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_reports(
        cls, training_summary: Mapping[str, Any], metrics: Mapping[str, Any], dataset_info: Mapping[str, Any], label_ratio: float
    ) -> EvaluatedModel:
        """From the training summary, the test metrics and the dataset description the pipelines write."""
        for name, report, keys in (
            ("training_summary", training_summary, ("best_checkpoint", "method", "data_version", "git_commit")),
            ("metrics", metrics, (SPLIT_KEY,)),
            ("dataset_info", dataset_info, ("classes",)),
        ):
            missing = [key for key in keys if key not in report]
            if missing:
                raise ValueError(f"{name} lacks {missing}: run the pipeline that writes it first")
        source = str(dataset_info.get("source", "unknown"))
        layout = dataset_info.get("layout")
        return cls(
            checkpoint=Path(training_summary["best_checkpoint"]),
            classes={str(k): str(v) for k, v in dataset_info["classes"].items()},
            metrics=dict(metrics),
            method=str(training_summary["method"]),
            dataset=source if not layout or layout == source else f"{source}/{layout}",
            label_ratio=float(label_ratio),
            data_sha256=str(training_summary["data_version"]),
            git_commit=str(training_summary["git_commit"]),
            run_id=training_summary.get("mlflow_run_id"),
            training={k: training_summary[k] for k in ("n_labelled", "n_unlabelled", "input_size", "best_val_dice",
                                                      "best_iteration") if k in training_summary},  # fmt: skip
            dvc_data=dict(training_summary.get("dvc_data") or {}),
        )

    @property
    def class_names(self) -> list[str]:
        """The foreground class names, in label order."""
        return [name for label, name in sorted(self.classes.items(), key=lambda item: int(item[0])) if label != "0"]

    def tags(self) -> dict[str, str]:
        """The version tags; every test metric as ``test.<key>`` (``null`` where the metric is)."""
        tags = {
            "method": self.method,
            "label_ratio": str(self.label_ratio),
            "dataset": self.dataset,
            "data_sha256": self.data_sha256,
            "git_commit": self.git_commit,
            SPLIT_KEY: str(self.metrics[SPLIT_KEY]),
            **{f"dvc.{path}": md5 for path, md5 in self.dvc_data.items()},
        }
        for key, value in self.metrics.items():
            if key != SPLIT_KEY:
                tags[f"{METRIC_TAG_PREFIX}{key}"] = "null" if value is None else str(value)
        return tags

    def model_card(self) -> str:
        """A short markdown card: data, method, test metrics and known failure cases."""
        m, t = self.metrics, self.training
        unit = m.get("distance_unit", "px")
        labels = {name: label for label, name in self.classes.items()}
        classes = ", ".join(f"{name} ({labels[name]})" for name in self.class_names)
        lines = [
            f"## sonoseg segmentation model: {self.method}",
            "",
            f"**Data.** Dataset `{self.dataset}`, classes {classes}. Trained on {t.get('n_labelled', '?')} labelled and "
            f"{t.get('n_unlabelled', '?')} unlabelled samples (label ratio {self.label_ratio}); data sha256 "
            f"`{self.data_sha256[:16]}`. Tested once on {m.get('cases', '?')} test cases, split sha256 "
            f"`{str(m[SPLIT_KEY])[:16]}`.",
            "",
            f"**Method.** `{self.method}` at a {t.get('input_size', '?')} px network input, chosen on val only "
            f"(best val Dice {_fmt(t.get('best_val_dice'))}); git commit `{self.git_commit[:12]}`; MLflow run "
            f"`{self.run_id or 'none'}`. Input: any 2-D frame (grey, RGB or 3 identical planes; uint8 or float); output: "
            "the label mask at the frame's own size plus AoP, HSD and HC.",
            "",
            f"**Test metrics** (mean ± std over cases; distances in {unit}):",
            "",
            "| class | Dice | IoU | HD95 | ASSD |",
            "|---|---|---|---|---|",
        ]
        for name in [*self.class_names, "union"]:
            cells = [f"{_fmt(m.get(f'{k}_{name}_mean'))} ± {_fmt(m.get(f'{k}_{name}_std'))}" for k in ("dice", "iou", "hd95", "assd")]
            lines.append(f"| {name} | {' | '.join(cells)} |")
        lines += ["", f"Mean Dice over classes {_fmt(m.get('dice_mean'))}. Biometry |error| (cases measured): "
                      f"AoP {_fmt(m.get('aop_abs_err_deg_mean'), 2)}° ({m.get('aop_abs_err_deg_cases', '?')}), "
                      f"HSD {_fmt(m.get('hsd_abs_err_mean'), 2)} {unit} ({m.get('hsd_abs_err_cases', '?')}), "
                      f"HC {_fmt(m.get('hc_abs_err_mean'), 2)} {unit} ({m.get('hc_abs_err_cases', '?')}).",
                  "", "**Known failure cases.**", *self._failure_cases()]  # fmt: skip
        return "\n".join(lines)

    def _failure_cases(self) -> list[str]:
        m = self.metrics
        class_cases = m.get("cases", 0) * len(self.class_names) if isinstance(m.get("cases"), int) else "?"
        notes = [f"- {m.get('empty_predictions', '?')} empty predictions (a class missed where the truth has it) out of "
                 f"{class_cases} case-classes; each is scored Dice 0 and HD95 = the image diagonal."]  # fmt: skip
        dice = {name: m.get(f"dice_{name}_mean") for name in self.class_names if isinstance(m.get(f"dice_{name}_mean"), (int, float))}
        if dice:
            worst = min(dice, key=dice.get)
            notes.append(f"- Weakest class: {worst} (Dice {_fmt(dice[worst])} ± {_fmt(m.get(f'dice_{worst}_std'))}).")
        hd95 = {name: m.get(f"hd95_{name}_mean") for name in self.class_names if isinstance(m.get(f"hd95_{name}_mean"), (int, float))}
        if hd95:
            far = max(hd95, key=hd95.get)
            notes.append(f"- Largest boundary error: {far} (HD95 {_fmt(hd95[far], 2)} {m.get('distance_unit', 'px')}).")
        cases = m.get("cases")
        for key, name in (("aop_abs_err_deg_cases", "AoP"), ("hsd_abs_err_cases", "HSD"), ("hc_abs_err_cases", "HC")):
            if isinstance(cases, int) and isinstance(m.get(key), int) and m[key] < cases:
                notes.append(f"- {name} was measurable on {m[key]} of {cases} test cases only (a structure missing or "
                             "too small to fit an ellipse).")  # fmt: skip
        return notes


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def metrics_from_tags(tags: Mapping[str, str]) -> dict[str, Any]:
    """The test metrics of a version, back from its ``test.<key>`` tags (numbers as floats), with its split hash."""
    metrics: dict[str, Any] = {}
    for key, text in tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            name = key[len(METRIC_TAG_PREFIX):]
            try:
                metrics[name] = None if text == "null" else float(text)
            except ValueError:
                metrics[name] = text
    if SPLIT_KEY in tags:
        metrics[SPLIT_KEY] = tags[SPLIT_KEY]
    return metrics


def default_lock_path(registry_uri: str) -> Path:
    """Beside the sqlite file for a sqlite registry; in the temp folder, named by the URI, otherwise."""
    if registry_uri.startswith("sqlite:///"):
        database = Path(registry_uri[len("sqlite:///"):].split("?")[0])
        return database.with_name(database.name + ".registry.lock")
    digest = hashlib.sha256(registry_uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"sonoseg-registry-{digest}.lock"


@contextmanager
def registry_lock(lock_path: Path | str | None = None, timeout_s: float = 600.0) -> Iterator[Path]:
    """Hold the registry's file lock (see the module docstring); a clear error after ``timeout_s``."""
    from filelock import FileLock, Timeout

    path = Path(lock_path) if lock_path else default_lock_path(mlflow.get_registry_uri())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path), timeout=timeout_s):
            yield path
    except Timeout as err:
        raise TimeoutError(f"{path}: another registration held the registry lock for over {timeout_s:.0f} s") from err


@contextmanager
def _training_run(run_id: str | None, method: str) -> Iterator[str]:
    """The run to log the model into: the active run when it is the training run, else the training run
    resumed (nested beside another active run, which stays untouched), or a new run when tracking was off."""
    active = mlflow.active_run()
    if run_id and active is not None and active.info.run_id == run_id:
        yield run_id
        return
    if not run_id:
        logger.warning("The training summary names no MLflow run (tracking was off): the model is logged to a new run")
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else f"register-{method}", nested=active is not None) as run:
        yield run.info.run_id


def _champion(client: mlflow.MlflowClient, model_name: str) -> Any | None:
    """The version the ``champion`` alias points to, or None when there is no such alias."""
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as err:
        # the sqlite store says INVALID_PARAMETER_VALUE for a missing alias; servers may say RESOURCE_DOES_NOT_EXIST
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def register_and_promote(
    model: EvaluatedModel,
    model_name: str,
    policy: PromotionPolicy,
    lock_path: Path | str | None = None,
    lock_timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Log ``model`` as a pyfunc into its training run, register it as ``challenger`` and run the gate.

    Returns:
        The promotion record: model name, challenger version, champion version before and after, the
        decision (``promoted`` or ``refused``), its reason, the compared metric values and the policy.
    """
    if not model.checkpoint.is_file():
        raise FileNotFoundError(f"{model.checkpoint}: the checkpoint to register does not exist")
    with _training_run(model.run_id, model.method) as run_id:
        info = log_segmentation_model(model.checkpoint, model.classes)
    client = mlflow.MlflowClient()
    with registry_lock(lock_path, lock_timeout_s):
        version = mlflow.register_model(info.model_uri, model_name, tags=model.tags()).version
        client.set_registered_model_alias(model_name, CHALLENGER, version)
        champion = _champion(client, model_name)
        decision = decide(model.metrics, metrics_from_tags(champion.tags) if champion else None, policy, model.class_names)
        if decision.promote:
            client.set_registered_model_alias(model_name, CHAMPION, version)
        before = int(champion.version) if champion else None
        after = int(version) if decision.promote else before
        _record_decision(client, model_name, version, model, decision, before)
    verdict = "promoted to champion" if decision.promote else f"refused (champion stays v{before})"
    logger.info("Registered %s v%s as challenger; %s: %s", model_name, version, verdict, decision.reason)
    return {
        "model_name": model_name,
        "challenger_version": int(version),
        "champion_version_before": before,
        "champion_version_after": after,
        "decision": "promoted" if decision.promote else "refused",
        "reason": decision.reason,
        "metric": policy.metric,
        "higher_is_better": policy.higher_is_better,
        "margin": policy.margin,
        "class_tolerance": policy.class_tolerance,
        "challenger_value": decision.challenger_value,
        "champion_value": decision.champion_value,
        SPLIT_KEY: model.metrics[SPLIT_KEY],
        "run_id": run_id,
        "model_uri": f"models:/{model_name}/{version}",
        "decided_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _record_decision(
    client: mlflow.MlflowClient, model_name: str, version: str, model: EvaluatedModel, decision: Decision, champion: int | None
) -> None:
    """The decision in the version's tags and at the end of its model card."""
    outcome = "promoted" if decision.promote else "refused"
    client.set_model_version_tag(model_name, version, "promotion.decision", outcome)
    client.set_model_version_tag(model_name, version, "promotion.reason", decision.reason)
    client.set_model_version_tag(model_name, version, "promotion.compared_with", f"v{champion}" if champion else "none")
    against = f"against champion v{champion}" if champion else "with no champion before it"
    verdict = "Promoted to `champion`" if decision.promote else "Not promoted (stays `challenger` until the next one)"
    card = f"{model.model_card()}\n\n**Promotion** ({against}). {verdict}: {decision.reason}."
    client.update_model_version(model_name, version, description=card)
