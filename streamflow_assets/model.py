"""The churn model: trained on the training CSVs, served on the online features, one feature list.

`churn_model` M trains on the training CSVs of the months before M inside the model window (12 by
default) and is evaluated on month M (a temporal hold-out); the first month, with nothing before
it, trains on a seeded 80% of its users and is evaluated on the other 20%. Every candidate is
registered in MLflow (model_registry.py) and promoted only when it beats the baselines and the
champion as of the month before; a candidate that loses is an outcome, not a failure.
`churn_scores` M scores month M's users with the champion as of M; the API's `/predict` scores a
user's online features with the current champion. Training and `churn_scores` turn a month's
features into the model's input with `feature_frame`, and the encoding of categories is inside the
pipeline; `/predict` encodes its one user's dict with that fitted encoding directly (no DataFrame
for one row), so offline and online scores of the same values are the same number (tested).
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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

from streamflow_assets.checks import (
    BEATS_BASELINES,
    BEATS_CHAMPION,
    MAX_CALIBRATION_ERROR,
    MIN_ROC_AUC,
    ONE_SCORE_PER_USER,
    WELL_CALIBRATED,
)
from streamflow_assets.feature_store.repo import FEATURE_SERVICE, feature_store
from streamflow_assets.feature_store.training import (
    LABEL,
    read_training_chunks,
    read_training_sample,
    training_columns,
    training_path,
)
from streamflow_assets.model_registry import Candidate, Decision, Registry
from streamflow_assets.months import (
    as_of,
    month_of,
    months_between,
    partition_key,
    previous_month,
)
from streamflow_assets.report import (
    CheckOutcome,
    MissingInputError,
    StepResult,
    markdown_table,
)
from streamflow_assets.settings import Settings, add_months
from streamflow_assets.sql import NO_AUTOVACUUM, copy_in, ident, literal, replace_table
from streamflow_assets.streams import read_ahead
from streamflow_assets.table_specs import LABELS
from streamflow_assets.warehouse import (
    SCORE_MONTHS_SCHEMA,
    STAGING_SCHEMA,
    ddl_transaction,
    month_name,
    staging_name,
)

SEED = 7
MAX_TRAINING_ROWS = 500_000
"""Earlier months are sampled down to this many rows (seeded): the model gains little from more,
and a 2-core machine trains it in well under a minute."""
MAX_EVALUATION_ROWS = 2_000_000
"""Month M is sampled down to this many rows (seeded) for the hold-out: its metrics then have
sampling errors of about 0.001, and a month of 10M users does not have to fit in memory."""
HGB_PARAMS = (
    "learning_rate",
    "max_iter",
    "max_leaf_nodes",
    "min_samples_leaf",
    "l2_regularization",
)
"""The model's settings recorded with each candidate."""
SCORES_TABLE = "churn_scores"
SCORE_COLUMNS = ["user_id", "as_of", "score", "model_version"]


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
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column):  # a CSV's column: no value to coerce
            out[name] = column.astype("float64")
        else:  # None, booleans and numbers mixed (the API's dicts)
            out[name] = pd.to_numeric(column.astype(object), errors="coerce").astype("float64")
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


def calibration_outcome(calibration: pd.DataFrame) -> CheckOutcome:
    """well_calibrated from the hold-out's deciles (calibration_by_decile)."""
    users = calibration["users"].sum()
    weights = calibration["users"] / users
    predicted_by_decile = calibration["mean_predicted"].clip(0, 1)
    gaps = (calibration["mean_predicted"] - calibration["churn_rate"]).abs()
    error = float((weights * gaps).sum())
    # What sampling alone gives a perfectly calibrated model: each decile's observed rate is a
    # binomial proportion around its prediction (mean absolute deviation sqrt(2/pi) x its SE).
    spread = np.sqrt(predicted_by_decile * (1 - predicted_by_decile) / calibration["users"])
    noise = float(math.sqrt(2 / math.pi) * (weights * spread).sum())
    allowed = max(MAX_CALIBRATION_ERROR, 2 * noise)
    predicted = float((weights * calibration["mean_predicted"]).sum())
    observed = float((weights * calibration["churn_rate"]).sum())
    return WELL_CALIBRATED.outcome(
        error <= allowed,
        f"expected calibration error {error:.4f} (at most {allowed:.4f}); mean prediction "
        f"{predicted:.4f} against a churn rate of {observed:.4f} on {users:,} users",
        {
            "expected calibration error": round(error, 4),
            "allowed": round(allowed, 4),
            "sampling noise (a calibrated model's expected error)": round(noise, 4),
            "mean prediction": round(predicted, 4),
            "observed churn rate": round(observed, 4),
            "hold-out users": int(users),
        },
    )


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
    x_test: pd.DataFrame
    y_test: np.ndarray


def window_months(settings: Settings, partition: str) -> list[str]:
    """The months before `partition` a model trains on: inside the model window, from the first
    month on, whose training CSV exists."""
    first = max(settings.first_month, add_months(month_of(partition), -settings.model_window))
    return [
        p
        for p in months_between(first, partition)
        if p < partition and training_path(settings.output_dir, p).exists()
    ]


def train(
    output_dir: Path, columns: dict[str, pa.DataType], earlier: list[str], partition: str
) -> TrainedModel:
    """Train on the earlier months' CSVs and evaluate on month M (or split month M 80/20). Both
    are seeded samples read a chunk at a time (`MAX_TRAINING_ROWS`, `MAX_EVALUATION_ROWS`), so
    memory does not grow with the users a month has or the months in the window; `columns` types
    the CSVs' columns (`training_columns`)."""
    current = read_training_sample(
        [training_path(output_dir, partition)], columns, MAX_EVALUATION_ROWS, seed=SEED
    )
    features = Features.of(current)
    if earlier:
        train_frame = read_training_sample(
            [training_path(output_dir, p) for p in earlier], columns, MAX_TRAINING_ROWS, seed=SEED
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
        x_test=x_test,
        y_test=y_test,
    )


@dataclass(frozen=True)
class LoadedModel:
    pipeline: Pipeline
    features: Features
    version: str
    """How scores and responses name it, e.g. "churn_model v3 (2024-02)"."""

    def score(self, records: pd.DataFrame | list[dict]) -> np.ndarray:
        """Churn probabilities: a month's frame through the pipeline; a few records (the API's)
        encoded directly into the model's input, which gives the same numbers 10x faster than
        building a DataFrame for one row."""
        if isinstance(records, list) and (encode := _row_encoder(self.pipeline, self.features)):
            rows = np.array([encode(record) for record in records], dtype=np.float64)
            return self.pipeline[-1].predict_proba(rows)[:, 1]
        return self.pipeline.predict_proba(feature_frame(records, self.features))[:, 1]


def _row_encoder(pipeline: Pipeline, features: Features):
    """A function from a feature dict to the row `churn_pipeline`'s encoding step would make, or
    None for a pipeline of another shape (it is then scored through the pipeline)."""
    cached = _ROW_ENCODERS.get(id(pipeline))
    if cached is not None and cached[0] is pipeline:
        return cached[1]
    encode = pipeline.named_steps.get("encode")
    categories = getattr(encode, "named_transformers_", {}).get("categories")
    if not isinstance(categories, OneHotEncoder) or categories.handle_unknown != "ignore":
        return None
    expected = [*categories.get_feature_names_out(features.categorical), *features.numeric]
    if list(encode.get_feature_names_out()) != expected:
        return None
    levels = [list(values) for values in categories.categories_]

    def same(value, level) -> bool:
        if value is None:
            return level is None or (isinstance(level, float) and math.isnan(level))
        return value == level

    def number(value) -> float:
        try:
            return math.nan if value is None else float(value)
        except (TypeError, ValueError):
            return math.nan  # as pd.to_numeric(errors="coerce")

    def row(record: dict) -> list[float]:
        out = []
        for name, known in zip(features.categorical, levels, strict=True):
            value = record.get(name)
            value = None if value is None or value != value else value
            out += [1.0 if same(value, level) else 0.0 for level in known]
        return out + [number(record.get(name)) for name in features.numeric]

    _ROW_ENCODERS[id(pipeline)] = (pipeline, row)
    return row


_ROW_ENCODERS: dict[int, tuple[Pipeline, object]] = {}


def load(registry: Registry, decision: Decision) -> LoadedModel:
    features = Features(decision.features["categorical"], decision.features["numeric"])
    return LoadedModel(registry.load(decision), features, decision.label)


# ---- the monthly steps -------------------------------------------------------------------------


def _table(frame: pd.DataFrame) -> str:
    return markdown_table(list(frame.columns), frame.itertuples(index=False))


def fingerprint(output_dir: Path, months: list[str], champion: str) -> str:
    """Everything a month's decision is made from: the training sets it reads (their bytes),
    the champion it was compared with, and the model's settings."""
    digest = hashlib.sha256()
    for month in sorted(set(months)):
        digest.update(month.encode())
        with open(training_path(output_dir, month), "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    model = churn_pipeline(Features([], [])).named_steps["model"].get_params()
    settings = {"champion": champion, "seed": SEED, "max_rows": MAX_TRAINING_ROWS,
                "max_evaluation_rows": MAX_EVALUATION_ROWS, "min_roc_auc": MIN_ROC_AUC,
                "model": {k: model[k] for k in HGB_PARAMS}}  # fmt: skip
    digest.update(repr(sorted(settings.items())).encode())
    return digest.hexdigest()[:20]


def train_month(settings: Settings, partition: str) -> StepResult:
    """Train, evaluate and register month M's candidate; promote it when it beats the baselines
    and the champion as of M-1. Losing is reported by the checks, not raised."""
    output_dir = settings.output_dir
    if not training_path(output_dir, partition).exists():
        raise MissingInputError(
            f"{training_path(output_dir, partition)} is missing: materialize training_dataset "
            f"for {partition}"
        )
    started = time.perf_counter()
    registry = Registry(settings)
    columns = training_columns(feature_store(settings))
    trained = train(output_dir, columns, window_months(settings, partition), partition)
    metrics = trained.metrics
    majority = trained.baselines["majority class"]
    beats_baselines = (
        metrics["roc_auc"] > MIN_ROC_AUC and metrics["log_loss"] < majority["log_loss"]
    )

    previous = registry.champion_as_of(previous_month(partition))
    rows = [{"model": "candidate", **{k: metrics[k] for k in ("roc_auc", "pr_auc", "log_loss")}}]
    if previous is not None:
        champion = load(registry, previous)
        held_out = _metrics(trained.y_test, champion.score(trained.x_test))
        rows.append({"model": f"champion as of {previous_month(partition)}: {champion.version}",
                     **held_out})  # fmt: skip
        beats_champion = metrics["log_loss"] <= held_out["log_loss"]
        against = f"{previous.label}'s log loss {held_out['log_loss']} on the same rows"
    else:
        beats_champion, against = True, f"no champion as of {previous_month(partition)}"
    rows += [{"model": name, **values} for name, values in trained.baselines.items()]
    comparison = _table(pd.DataFrame(rows))

    promoted = beats_baselines and beats_champion
    reason = (
        "promoted: beats the baselines and " + ("the champion" if previous else "no champion yet")
        if promoted
        else "not promoted: "
        + " and ".join(
            what
            for what, lost in (
                ("loses to the baselines", not beats_baselines),
                ("loses to the champion", not beats_champion),
            )
            if lost
        )
    )
    decision = registry.register(
        Candidate(
            partition=partition,
            pipeline=trained.pipeline,
            promoted=promoted,
            reason=reason,
            training_months=trained.training_months,
            features={
                "categorical": trained.features.categorical,
                "numeric": trained.features.numeric,
            },
            feature_service=FEATURE_SERVICE,
            fingerprint=fingerprint(
                settings.output_dir,
                [*trained.training_months, partition],
                previous.label if previous else "none",
            ),
            params={
                "training_months": ",".join(trained.training_months),
                "holdout": trained.holdout,
                "model_window": settings.model_window,
                "feature_service": FEATURE_SERVICE,
                "features": ",".join(trained.features.names),
                **{
                    f"hgb_{k}": v
                    for k, v in trained.pipeline.named_steps["model"].get_params().items()
                    if k in HGB_PARAMS
                },
            },
            metrics={
                **{k: float(v) for k, v in metrics.items()},
                **{
                    f"{name.replace(' ', '_')}_{key}": value
                    for name, values in trained.baselines.items()
                    for key, value in values.items()
                },
            },
            texts={
                "comparison.md": comparison,
                "calibration_by_decile.md": _table(trained.calibration),
                "feature_importance.md": _table(trained.importance),
            },
            example_input=trained.x_test.head(50),
            example_output=trained.pipeline.predict_proba(trained.x_test.head(50))[:, 1],
        )
    )
    champion_now = registry.champion_as_of(partition)
    checks = [
        BEATS_BASELINES.outcome(
            beats_baselines,
            f"ROC AUC {metrics['roc_auc']} (needs > {MIN_ROC_AUC}), log loss "
            f"{metrics['log_loss']} (majority class: {majority['log_loss']})",
            {"comparison": comparison},
        ),
        BEATS_CHAMPION.outcome(
            beats_champion,
            f"log loss {metrics['log_loss']} against {against}",
            {"comparison": comparison},
        ),
        calibration_outcome(trained.calibration),
    ]
    return StepResult(
        checks,
        {
            "model version": decision.label,
            "decision": reason,
            "promoted": promoted,
            "champion as of this month": champion_now.label if champion_now else "none",
            "training months": ", ".join(trained.training_months),
            "hold-out": trained.holdout,
            **dict(metrics.items()),
            "against the champion and baselines": comparison,
            "calibration by decile": _table(trained.calibration),
            "feature importance (ROC AUC drop when shuffled)": _table(trained.importance),
            "mlflow run": decision.run_id,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )


def verify_scores(engine: Engine, partition: str, expected_version: str | None) -> CheckOutcome:
    """The month's rows of churn_scores against the month's users and the champion's name."""
    with engine.connect() as conn:
        rows, users, outside, unnamed, versions = conn.execute(
            sa.text(
                f"""SELECT count(*), count(DISTINCT user_id),
                           count(*) FILTER (WHERE NOT score BETWEEN 0 AND 1 OR score IS NULL),
                           count(*) FILTER (WHERE coalesce(model_version, '') = ''),
                           array_agg(DISTINCT model_version)
                    FROM {ident(SCORES_TABLE)} WHERE as_of = :a"""
            ),
            {"a": as_of(partition)},
        ).one()
        month_users = conn.execute(
            sa.text(f"SELECT count(*) FROM {ident(LABELS.snapshot.name)} WHERE as_of = :a"),
            {"a": as_of(partition)},
        ).scalar()
    versions = sorted(v for v in versions or [] if v)
    expected_rows = month_users if expected_version else 0
    problems = []
    if rows != expected_rows or users != rows:
        problems.append(f"{rows:,} scores for {users:,} users; the month has {month_users:,} users")
    if outside:
        problems.append(f"{outside:,} scores outside [0, 1]")
    if unnamed:
        problems.append(f"{unnamed:,} scores name no model version")
    if expected_version and versions != [expected_version]:
        problems.append(f"scored by {', '.join(versions) or 'nothing'}, not {expected_version}")
    return ONE_SCORE_PER_USER.outcome(
        not problems,
        "; ".join(problems)
        or (
            f"{rows:,} scores in [0, 1] by {expected_version}"
            if expected_version
            else "no champion as of the month: no scores"
        ),
        metadata={
            "scores": rows,
            "users scored": users,
            "users in the month": month_users,
            "scores outside [0, 1]": outside,
            "model versions": ", ".join(versions) or "none",
        },
    )


def ensure_scores_table(engine: Engine) -> None:
    """churn_scores, one partition per month (as_of) in SCORE_MONTHS_SCHEMA. A table from before
    the partitions (one table for every month's rows) is converted once, rows unchanged."""
    table = ident(SCORES_TABLE)
    with ddl_transaction(engine) as conn:
        kind = conn.execute(
            sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"),
            {"t": f"public.{SCORES_TABLE}"},
        ).scalar()
        before = f"{SCORES_TABLE}_unpartitioned"
        old = ident(before)
        if kind == "r":  # out of the way, its primary key's name too (the new table's)
            conn.execute(sa.text(f"ALTER TABLE {table} RENAME TO {old}"))
            conn.execute(
                sa.text(
                    f"ALTER TABLE {old} RENAME CONSTRAINT {ident(SCORES_TABLE + '_pkey')} "
                    f"TO {ident(before + '_pkey')}"
                )
            )
        conn.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {table} (user_id TEXT NOT NULL, "
                "as_of DATE NOT NULL, score DOUBLE PRECISION NOT NULL, "
                "model_version TEXT NOT NULL, PRIMARY KEY (user_id, as_of)) "
                "PARTITION BY LIST (as_of)"
            )
        )
        if kind == "r":
            for (day,) in conn.execute(sa.text(f"SELECT DISTINCT as_of FROM {old} ORDER BY 1")):
                name = month_name(SCORES_TABLE, partition_key(day))
                conn.execute(
                    sa.text(
                        f"CREATE TABLE {ident(SCORE_MONTHS_SCHEMA, name)} PARTITION OF {table} "
                        f"FOR VALUES IN ({literal(day)})"
                    )
                )
            conn.execute(sa.text(f"INSERT INTO {table} SELECT * FROM {old}"))
            conn.execute(sa.text(f"DROP TABLE {old}"))


def score_month(engine: Engine, settings: Settings, partition: str) -> StepResult:
    """Score every user of the month with the champion as of the month into table churn_scores,
    replacing exactly that month's rows, and check what was written. With no champion as of the
    month (no candidate promoted yet), the month has no scores."""
    registry = Registry(settings)
    decisions = registry.decisions()
    if partition not in decisions:
        raise MissingInputError(f"no churn_model for {partition}: materialize churn_model first")
    champion = registry.champion_as_of(partition, decisions)
    ensure_scores_table(engine)
    part_name = month_name(SCORES_TABLE, partition)
    part = ident(SCORE_MONTHS_SCHEMA, part_name)
    if champion is None:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {part}"))
        return StepResult(
            [verify_scores(engine, partition, None)],
            {
                "as_of": str(as_of(partition)),
                "rows": 0,
                "model version": f"none: no candidate up to {partition} has been promoted",
            },
        )
    model = load(registry, champion)
    path = training_path(settings.output_dir, partition)
    columns = training_columns(feature_store(settings))
    # The month a chunk at a time (memory bounded whatever the month's size), into one COPY:
    # each chunk's scores become a CSV buffer written by Arrow. No Python loop over the rows.
    rows, total, preview = 0, 0.0, None

    def scored_chunks() -> Iterator[bytes]:
        nonlocal rows, total, preview
        for frame in read_training_chunks(path, columns):
            scores = pd.DataFrame(
                {
                    "user_id": frame["user_id"],
                    "as_of": as_of(partition),
                    "score": model.score(frame),
                    "model_version": model.version,
                }
            )
            buffer = io.BytesIO()
            pa_csv.write_csv(
                pa.Table.from_pandas(scores, preserve_index=False),
                buffer,
                write_options=pa_csv.WriteOptions(include_header=False),
            )
            rows, total = rows + len(scores), total + float(scores["score"].sum())
            preview = scores.head(5) if preview is None else preview
            yield buffer.getvalue()

    # The month's partition is built beside the table and swapped in, all in one transaction:
    # a new table takes the COPY without index upkeep (or, on the embedded server, WAL), and
    # its primary key is built once, from the training CSV's rows in user order. A failed
    # month leaves the partition it had.
    staged = staging_name(SCORES_TABLE, partition, "scores")
    target = ident(STAGING_SCHEMA, staged)
    month = literal(as_of(partition))
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {target} (LIKE {ident(SCORES_TABLE)}) {NO_AUTOVACUUM}"))
        copy_in(conn, target, SCORE_COLUMNS, read_ahead(scored_chunks(), name="churn-scores"))
        conn.execute(sa.text(f"ALTER TABLE {target} ADD PRIMARY KEY (user_id, as_of)"))
        # Proves the partition bound, so ATTACH needs no scan.
        conn.execute(sa.text(f"ALTER TABLE {target} ADD CHECK (as_of = {month})"))
        conn.execute(sa.text(f"ANALYZE {target}"))  # autovacuum never will (NO_AUTOVACUUM)
        replace_table(conn, (STAGING_SCHEMA, staged), (SCORE_MONTHS_SCHEMA, part_name))
        conn.execute(
            sa.text(
                f"ALTER TABLE {ident(SCORES_TABLE)} ATTACH PARTITION {part} FOR VALUES IN ({month})"
            )
        )
    return StepResult(
        [verify_scores(engine, partition, model.version)],
        {
            "as_of": str(as_of(partition)),
            "rows": rows,
            "model version": model.version,
            "mean score": round(total / rows, 4) if rows else None,
            "preview": _table(preview) if preview is not None else "no users",
        },
    )
