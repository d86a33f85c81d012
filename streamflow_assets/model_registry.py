"""The churn model's registry: every candidate an MLflow run and a version of `churn_model`.

MLflow's tracking and registry store is the project's own PostgreSQL (schema `mlflow`, created on
first use, the embedded server included: nothing else to start); artifacts live under
`STREAMFLOW_OUTPUT_DIR/mlruns`.

Decided by months, never by the order runs happened in:
- month M's decision is the newest version registered for M (a re-run registers a new one);
- candidate M is promoted when it beats the baselines and its log loss on M's hold-out is not worse
  than that of the champion as of M-1, scored on the same hold-out;
- the champion as of M is the promoted decision of the latest month <= M;
- the alias `champion` names the champion as of the newest month that has a decision.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from streamflow_assets.db import database_url, get_engine
from streamflow_assets.settings import Settings, redacted
from streamflow_assets.sql import advisory_lock, ident

MODEL_NAME = "churn_model"
EXPERIMENT = "churn_model"
SCHEMA = "mlflow"
CHAMPION = "champion"
SKOPS_TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
_INITIALIZED: set[str] = set()
"""The stores this process has initialized."""

log = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    """The MLflow store does not answer, or a model version cannot be loaded; the message names
    which."""


def _mlflow():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow
        import mlflow.sklearn
    return mlflow


def tracking_url(settings: Settings) -> URL:
    """The MLflow store: the settings' database, its tables in schema `mlflow`."""
    url = database_url(settings)
    return url.set(query={**url.query, "options": f"-csearch_path={SCHEMA}"})


def tracking_uri(settings: Settings) -> str:
    return tracking_url(settings).render_as_string(hide_password=False)


def artifact_root(settings: Settings) -> Path:
    return settings.output_dir / "mlruns"


@dataclass(frozen=True)
class Decision:
    """One month's decision: the newest version registered for the month."""

    version: int
    partition: str
    promoted: bool
    run_id: str
    features: dict[str, list[str]]
    training_months: list[str]
    reason: str
    fingerprint: str = ""
    """A hash of everything the decision was made from: the same inputs register no new
    version."""

    @property
    def label(self) -> str:
        return f"{MODEL_NAME} v{self.version} ({self.partition})"


class Registry:
    """The registered model `churn_model` in the settings' MLflow store."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.uri = tracking_uri(settings)
        _initialize(self.uri, settings)
        mlflow = _mlflow()
        self.client = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    # ---- reading decisions ----------------------------------------------------------------

    def decisions(self) -> dict[str, Decision]:
        """Each month's decision (its newest version), keyed by partition."""
        try:
            versions = self.client.search_model_versions(f"name = '{MODEL_NAME}'")
        except Exception as exc:
            raise self._unavailable(exc) from None
        newest: dict[str, Decision] = {}
        for v in versions:
            decision = _decision(v)
            if decision is None:
                continue
            current = newest.get(decision.partition)
            if current is None or decision.version > current.version:
                newest[decision.partition] = decision
        return newest

    def champion_as_of(self, partition: str, decisions: dict | None = None) -> Decision | None:
        """The promoted decision of the latest month <= partition, if any."""
        decisions = self.decisions() if decisions is None else decisions
        promoted = [d for p, d in decisions.items() if p <= partition and d.promoted]
        return max(promoted, key=lambda d: d.partition) if promoted else None

    def current_champion(self) -> Decision | None:
        """The version the alias `champion` names (None before any promotion)."""
        try:
            version = self.client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
        except Exception as exc:
            if _not_found(exc):
                return None
            raise self._unavailable(exc) from None
        return _decision(version)

    def load(self, decision: Decision):
        """The fitted pipeline of a version; a clear error naming it when it cannot be loaded."""
        mlflow = _mlflow()
        try:
            where = self.client.get_model_version_download_uri(MODEL_NAME, str(decision.version))
        except Exception as exc:
            raise self._unavailable(exc) from None
        try:
            # From the artifact location the registry names: no process-wide MLflow settings.
            return mlflow.sklearn.load_model(where)
        except Exception as exc:
            raise RegistryError(
                f"{decision.label} cannot be loaded from {where}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None

    # ---- writing a candidate --------------------------------------------------------------

    def register(self, candidate: Candidate) -> Decision:
        """Log the candidate as an MLflow run, register it as a version of `churn_model` with the
        month's decision in its tags, and point the alias at the champion as of the newest
        month. A candidate made from the same inputs as the month's newest version is that
        version: re-running a month changes nothing."""
        same = self.decisions().get(candidate.partition)
        if same is not None and same.fingerprint == candidate.fingerprint:
            with advisory_lock(get_engine(self.settings), "mlflow-champion"):
                self.point_alias()
            return same
        mlflow = _mlflow()
        from mlflow.models import infer_signature

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        tags = {
            "partition": candidate.partition,
            "promoted": "true" if candidate.promoted else "false",
            "decision": candidate.reason,
            "training_months": json.dumps(candidate.training_months),
            "features": json.dumps(candidate.features),
            "feature_service": candidate.feature_service,
            "fingerprint": candidate.fingerprint,
        }
        experiment = self._experiment_id()
        with mlflow.start_run(experiment_id=experiment, run_name=f"churn {candidate.partition}"):
            mlflow.set_tags(tags)
            mlflow.log_params(candidate.params)
            mlflow.log_metrics(candidate.metrics)
            for name, text in candidate.texts.items():
                mlflow.log_text(text, name)
            signature = infer_signature(candidate.example_input, candidate.example_output)
            info = mlflow.sklearn.log_model(
                candidate.pipeline,
                name="model",
                signature=signature,
                # MLflow stores scikit-learn models with skops (no arbitrary code on load), which
                # trusts only the types it is told of beyond its own list.
                skops_trusted_types=SKOPS_TRUSTED_TYPES,
            )
        # One lock for registering and moving the alias: runs of two months at once each see the
        # other's version before the alias is computed.
        with advisory_lock(get_engine(self.settings), "mlflow-champion"):
            # The version carries its month's decision from the moment it exists. MLflow prints
            # what it registered to stderr; the run's metadata says it already.
            with contextlib.redirect_stderr(io.StringIO()) as printed:
                mlflow.register_model(info.model_uri, MODEL_NAME, tags=tags)
            log.debug("mlflow: %s", printed.getvalue().strip())
            self.point_alias()
        return self.decisions()[candidate.partition]

    def point_alias(self) -> Decision | None:
        """Move `champion` to the champion as of the newest decided month (remove it if none)."""
        decisions = self.decisions()
        champion = self.champion_as_of(max(decisions), decisions) if decisions else None
        if champion is None:
            try:
                self.client.delete_registered_model_alias(MODEL_NAME, CHAMPION)
            except Exception as exc:
                if not _not_found(exc):
                    raise
        else:
            self.client.set_registered_model_alias(MODEL_NAME, CHAMPION, str(champion.version))
        return champion

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return found.experiment_id
        location = artifact_root(self.settings)
        location.mkdir(parents=True, exist_ok=True)
        return self.client.create_experiment(EXPERIMENT, artifact_location=location.as_uri())

    def _unavailable(self, exc: Exception) -> RegistryError:
        return RegistryError(
            f"the MLflow store at {redacted(tracking_url(self.settings))} does not answer: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )


@dataclass
class Candidate:
    """A trained model and what the registry records of it."""

    partition: str
    pipeline: object
    promoted: bool
    reason: str
    training_months: list[str]
    features: dict[str, list[str]]
    feature_service: str
    fingerprint: str
    params: dict[str, object]
    metrics: dict[str, float]
    texts: dict[str, str]
    example_input: object
    example_output: object


def _decision(version) -> Decision | None:
    """A registered version as a month's decision (None for a version this project did not
    register)."""
    tags = version.tags or {}
    if "partition" not in tags:
        return None
    return Decision(
        version=int(version.version),
        partition=tags["partition"],
        promoted=tags.get("promoted") == "true",
        run_id=version.run_id,
        features=json.loads(tags.get("features", "{}")),
        training_months=json.loads(tags.get("training_months", "[]")),
        reason=tags.get("decision", ""),
        fingerprint=tags.get("fingerprint", ""),
    )


def _not_found(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or (
        "not found" in str(exc).lower()
    )


def _initialize(uri: str, settings: Settings) -> None:
    """Create the `mlflow` schema and MLflow's tables once per database (processes that start
    at once wait on one lock instead of racing through MLflow's migrations)."""
    if uri in _INITIALIZED:
        return
    try:
        engine = get_engine(settings)
    except Exception as exc:
        raise RegistryError(
            f"the MLflow store at {redacted(tracking_url(settings))} does not answer: {exc}"
        ) from None
    with advisory_lock(engine, "mlflow-init"):
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {ident(SCHEMA)}"))
        mlflow = _mlflow()
        try:
            mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(
                max_results=1
            )
        except Exception as exc:
            raise RegistryError(
                f"the MLflow store at {redacted(tracking_url(settings))} does not answer: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
    _INITIALIZED.add(uri)
