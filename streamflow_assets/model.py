"""The churn model: trained on the training CSVs, served on the online features, one feature list.

`churn_model` M trains on the training CSVs of every month before M and is evaluated on month M (a
temporal hold-out); the first month, with nothing before it, trains on a seeded 80% of its users
and is evaluated on the other 20%. `churn_scores` M scores month M's users with model M. The API's
`/predict` scores a user's online features with the newest model. All three turn features into
the model's input with `feature_frame`, and the encoding of categories is inside the pipeline, so
offline and online scores of the same values are the same number.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sqlalchemy.engine import Engine

from streamflow_assets.feature_store.repo import FEATURE_SERVICE
from streamflow_assets.feature_store.training import LABEL, read_training_csv, training_path
from streamflow_assets.files import atomic_write
from streamflow_assets.months import as_of, months_between
from streamflow_assets.report import (
    CheckOutcome,
    MissingInputError,
    StepRefused,
    StepResult,
    markdown_table,
)
from streamflow_assets.sql import copy_in, ident

SEED = 7
MAX_TRAINING_ROWS = 500_000
"""Earlier months are sampled down to this many rows (seeded): the model gains little from more,
and a 2-core machine trains it in well under a minute."""
MIN_ROC_AUC = 0.6
MODEL_FILE = "model.joblib"
CARD_FILE = "model.json"
SCORES_TABLE = "churn_scores"


@dataclass(frozen=True)
class Features:
    """The model's inputs, in order: categories one-hot encoded, everything else a number."""

    categorical: list[str]
    numeric: list[str]

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Features:
        columns = [c for c in frame.columns if c not in ("user_id", "event_timestamp", LABEL)]
        categorical = [c for c in columns if frame[c].dtype == object]
        return cls(categorical, [c for c in columns if c not in categorical])

    @property
    def names(self) -> list[str]:
        return self.categorical + self.numeric


def feature_frame(records: pd.DataFrame | list[dict], features: Features) -> pd.DataFrame:
    """Model input from a training CSV's rows or the API's feature dicts: categories as strings
    (missing: None), numbers and booleans as floats (missing: NaN)."""
    frame = pd.DataFrame(records)
    out = pd.DataFrame(index=frame.index)
    for name in features.categorical:
        out[name] = frame[name].astype(object).where(frame[name].notna(), None)
    for name in features.numeric:
        out[name] = pd.to_numeric(frame[name].astype(object), errors="coerce").astype("float64")
    return out


def churn_pipeline(features: Features) -> Pipeline:
    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore"), features.categorical)],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    return Pipeline(
        [
            ("encode", encode),
            # Small, regularised trees with early stopping on a held-back 10%: a first month of a
            # few thousand users must not overfit its probabilities.
            (
                "model",
                HistGradientBoostingClassifier(
                    learning_rate=0.05,
                    max_iter=500,
                    max_leaf_nodes=15,
                    min_samples_leaf=40,
                    l2_regularization=1.0,
                    early_stopping=True,
                    validation_fraction=0.1,
                    random_state=SEED,
                ),
            ),
        ]
    )


def logistic_baseline(features: Features) -> Pipeline:
    encode = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), features.categorical),
            (
                "numbers",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                features.numeric,
            ),
        ]
    )
    return Pipeline([("encode", encode), ("model", LogisticRegression(max_iter=2000))])


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "roc_auc": round(float(roc_auc_score(y, p)), 4),
        "pr_auc": round(float(average_precision_score(y, p)), 4),
        "log_loss": round(float(log_loss(y, p, labels=[False, True])), 4),
    }


def calibration_by_decile(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"predicted": p, "churned": y.astype(float)})
    frame["decile"] = pd.qcut(frame["predicted"].rank(method="first"), 10, labels=range(1, 11))
    table = frame.groupby("decile", observed=True).agg(
        users=("churned", "size"),
        mean_predicted=("predicted", "mean"),
        churn_rate=("churned", "mean"),
    )
    return table.round(4).reset_index()


@dataclass
class TrainedModel:
    pipeline: Pipeline
    features: Features
    training_months: list[str]
    holdout: str
    metrics: dict
    baselines: dict
    calibration: pd.DataFrame
    importance: pd.DataFrame


def train(output_dir: Path, first_month: date, partition: str) -> TrainedModel:
    """Train on every earlier month's CSV and evaluate on month M (or split month M 80/20)."""
    current = read_training_csv(training_path(output_dir, partition))
    earlier = [
        p
        for p in months_between(first_month, partition)
        if p < partition and training_path(output_dir, p).exists()
    ]
    features = Features.of(current)
    if earlier:
        train_frame = pd.concat(
            [read_training_csv(training_path(output_dir, p)) for p in earlier], ignore_index=True
        )
        test_frame = current
        holdout = f"month {partition}"
    else:
        train_frame, test_frame = train_test_split(
            current, test_size=0.2, random_state=SEED, stratify=current[LABEL]
        )
        holdout = f"a seeded 20% of {partition}'s users (no earlier month)"
    if len(train_frame) > MAX_TRAINING_ROWS:
        train_frame = train_frame.sample(MAX_TRAINING_ROWS, random_state=SEED)
    x_train, y_train = feature_frame(train_frame, features), train_frame[LABEL].to_numpy(bool)
    x_test, y_test = feature_frame(test_frame, features), test_frame[LABEL].to_numpy(bool)

    pipeline = churn_pipeline(features).fit(x_train, y_train)
    p = pipeline.predict_proba(x_test)[:, 1]
    baselines = {}
    for name, baseline in (
        ("majority class", DummyClassifier(strategy="prior")),
        ("logistic regression", logistic_baseline(features)),
    ):
        baseline.fit(x_train, y_train)
        baselines[name] = _metrics(y_test, baseline.predict_proba(x_test)[:, 1])

    sample = min(len(x_test), 20_000)
    importance = permutation_importance(
        pipeline,
        x_test.iloc[:sample],
        y_test[:sample],
        scoring="roc_auc",
        n_repeats=3,
        random_state=SEED,
    )
    importance_table = (
        pd.DataFrame(
            {"feature": features.names, "roc_auc_drop": importance.importances_mean.round(4)}
        )
        .sort_values("roc_auc_drop", ascending=False)
        .reset_index(drop=True)
    )
    return TrainedModel(
        pipeline=pipeline,
        features=features,
        training_months=earlier or [partition],
        holdout=holdout,
        metrics={**_metrics(y_test, p), "train_rows": len(x_train), "test_rows": len(x_test)},
        baselines=baselines,
        calibration=calibration_by_decile(y_test, p),
        importance=importance_table,
    )


def model_dir(output_dir: Path, partition: str) -> Path:
    return output_dir / "models" / partition


def save(trained: TrainedModel, output_dir: Path, partition: str) -> dict:
    """Write the model, then its card (which names the model file's hash): readers only take a
    folder with a card, and a card only vouches for the model it was written with."""
    target = model_dir(output_dir, partition)
    with atomic_write(target / MODEL_FILE) as tmp:
        joblib.dump(trained.pipeline, tmp)
    card = {
        "model_version": f"churn-{partition}",
        "partition": partition,
        "feature_service": FEATURE_SERVICE,
        "features": {
            "categorical": trained.features.categorical,
            "numeric": trained.features.numeric,
        },
        "training_months": trained.training_months,
        "holdout": trained.holdout,
        "metrics": trained.metrics,
        "baselines": trained.baselines,
        "model_sha256": _sha256(target / MODEL_FILE),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with atomic_write(target / CARD_FILE) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    return card


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class LoadedModel:
    pipeline: Pipeline
    features: Features
    card: dict

    @property
    def version(self) -> str:
        return self.card["model_version"]

    def score(self, records: pd.DataFrame | list[dict]) -> np.ndarray:
        return self.pipeline.predict_proba(feature_frame(records, self.features))[:, 1]


def load(folder: Path) -> LoadedModel:
    card = json.loads((folder / CARD_FILE).read_text())
    if _sha256(folder / MODEL_FILE) != card.get("model_sha256"):
        raise ValueError(
            f"{folder / MODEL_FILE} is not the model its card {folder / CARD_FILE} was written "
            "for (its hash differs): materialize churn_model for that month again"
        )
    features = Features(card["features"]["categorical"], card["features"]["numeric"])
    return LoadedModel(joblib.load(folder / MODEL_FILE), features, card)


def newest_model_dir(output_dir: Path) -> Path | None:
    models = output_dir / "models"
    if not models.is_dir():
        return None
    done = sorted(p for p in models.iterdir() if (p / CARD_FILE).exists() and p.name[0] != ".")
    return done[-1] if done else None


# ---- the monthly steps -------------------------------------------------------------------------

BEATS_BASELINES = (
    f"ROC AUC above {MIN_ROC_AUC} and log loss below the majority-class baseline's, on the "
    "hold-out."
)


def _table(frame: pd.DataFrame) -> str:
    return markdown_table(list(frame.columns), frame.itertuples(index=False))


def train_month(output_dir: Path, first_month: date, partition: str) -> StepResult:
    """Train and evaluate month M's model; save it only when it beats the baselines."""
    if not training_path(output_dir, partition).exists():
        raise MissingInputError(
            f"{training_path(output_dir, partition)} is missing: materialize training_dataset "
            f"for {partition}"
        )
    started = time.perf_counter()
    trained = train(output_dir, first_month, partition)
    majority = trained.baselines["majority class"]
    passed = (
        trained.metrics["roc_auc"] > MIN_ROC_AUC
        and trained.metrics["log_loss"] < majority["log_loss"]
    )
    comparison = pd.DataFrame(
        [
            {
                "model": "churn model",
                **{k: trained.metrics[k] for k in ("roc_auc", "pr_auc", "log_loss")},
            }
        ]
        + [{"model": name, **values} for name, values in trained.baselines.items()]
    )
    check = CheckOutcome(
        name="beats_baselines",
        passed=passed,
        description=f"ROC AUC {trained.metrics['roc_auc']} (needs > {MIN_ROC_AUC}), log loss "
        f"{trained.metrics['log_loss']} (majority class: {majority['log_loss']})",
        metadata={"comparison": _table(comparison)},
    )
    if not passed:
        return StepResult(
            [check],
            refused=StepRefused(
                f"churn_model {partition} not saved: it does not beat the baselines"
            ),
        )
    card = save(trained, output_dir, partition)
    return StepResult(
        [check],
        {
            "model version": card["model_version"],
            "path": model_dir(output_dir, partition),
            "training months": ", ".join(trained.training_months),
            "hold-out": trained.holdout,
            **dict(trained.metrics.items()),
            "against baselines": _table(comparison),
            "calibration by decile": _table(trained.calibration),
            "feature importance (ROC AUC drop when shuffled)": _table(trained.importance),
            "seconds": round(time.perf_counter() - started, 1),
        },
    )


def score_month(engine: Engine, output_dir: Path, partition: str) -> dict[str, object]:
    """Score every user of the month with the month's model into table churn_scores, replacing
    exactly that month's rows; the metadata of the write."""
    folder = model_dir(output_dir, partition)
    if not (folder / CARD_FILE).exists():
        raise MissingInputError(f"no model in {folder}: materialize churn_model for {partition}")
    model = load(folder)
    frame = read_training_csv(training_path(output_dir, partition))
    scores = pd.DataFrame(
        {
            "user_id": frame["user_id"],
            "as_of": as_of(partition),
            "score": model.score(frame),
            "model_version": model.version,
        }
    )
    table = ident(SCORES_TABLE)
    # One CSV buffer written by Arrow, one COPY: no Python loop over the rows.
    buffer = io.BytesIO()
    pa_csv.write_csv(
        pa.Table.from_pandas(scores, preserve_index=False),
        buffer,
        write_options=pa_csv.WriteOptions(include_header=False),
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {table} (user_id TEXT NOT NULL, "
                "as_of DATE NOT NULL, score DOUBLE PRECISION NOT NULL, "
                "model_version TEXT NOT NULL, PRIMARY KEY (user_id, as_of))"
            )
        )
        conn.execute(sa.text(f"DELETE FROM {table} WHERE as_of = :a"), {"a": as_of(partition)})
        copy_in(conn, table, list(scores.columns), buffer.getvalue())
    return {
        "as_of": str(as_of(partition)),
        "rows": len(scores),
        "model version": model.version,
        "mean score": round(float(scores["score"].mean()), 4),
        "preview": _table(scores.head(5)),
    }
