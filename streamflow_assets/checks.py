"""Every check the graph declares: its name, whether a failure blocks, and what it asserts.

One catalog, light to import: the wiring declares its asset checks from it when the code location
loads, without importing the libraries that evaluate them (Great Expectations, Feast,
scikit-learn, Evidently), and the domain modules that evaluate a check take its name and
severity from here, so the UI and the result always agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streamflow_assets.report import CheckOutcome

ROW_COUNT_TOLERANCE = 0.2
"""A month's row count further than this from the previous month's is worth a warning."""
LABEL_RATE_JUMP = 0.15
"""A month's churn rate further than this from the previous month's is worth a warning."""
MIN_ROC_AUC = 0.6
"""A candidate model below this ROC AUC on its hold-out does not beat the baselines."""
MAX_CALIBRATION_ERROR = 0.05
"""A model whose expected calibration error on its hold-out is above this is flagged."""


@dataclass(frozen=True)
class Check:
    name: str
    blocking: bool
    """A failed blocking check stops the step (nothing downstream runs); any other is a warning
    and the month completes."""
    description: str

    def outcome(
        self,
        passed: bool,
        description: str,
        metadata: Mapping[str, object] | None = None,
        *,
        asset: str | None = None,
    ) -> CheckOutcome:
        """This check's result for one partition: why it passed or failed, and its numbers."""
        return CheckOutcome(
            name=self.name,
            passed=passed,
            description=description,
            metadata=dict(metadata or {}),
            asset=asset,
            blocking=self.blocking,
        )


# ---- the live tables: one set per drop file (streamflow_assets/ingestion) ----------------------

FILE_FORMAT = Check(
    "file_format",
    True,
    "The file has exactly the table's columns (optional add-on columns may be absent), no "
    "column twice, and every line after the header was staged as one row.",
)
VALUES_PARSE = Check(
    "values_parse",
    True,
    "Every value parses as its column's SQL type: integers, decimals, True/False, real "
    "YYYY-MM-DD dates.",
)
USER_IDS = Check(
    "user_ids",
    True,
    "user_id is present, unique, shaped like 7590-VHVEG, and (except in users) listed in the "
    "month's users file.",
)
ALLOWED_VALUES = Check(
    "allowed_values",
    True,
    "Required columns have values, categories are allowed values, numbers are in range, and "
    "plan_stream_* are NULL exactly when net_service is No.",
)
ALL_USERS_PRESENT = Check(
    "all_users_present",
    False,
    "Every user of the month's users file has a row in this file.",
)
ROW_COUNT_STABLE = Check(
    "row_count_stable",
    False,
    f"The row count is within {ROW_COUNT_TOLERANCE:.0%} of the previous month's.",
)
LABEL_RATE_STABLE = Check(
    "label_rate_stable",
    False,
    "The month's churn rate is neither 0% nor 100%, and within "
    f"{LABEL_RATE_JUMP:.0%} points of the previous month's.",
)


def drop_checks(table: str, *, has_label: bool) -> list[Check]:
    """The checks of one live table, in the order they run."""
    checks = [FILE_FORMAT, VALUES_PARSE, USER_IDS, ALLOWED_VALUES]
    if table != "users":
        checks.append(ALL_USERS_PRESENT)
    checks.append(ROW_COUNT_STABLE)
    if has_label:
        checks.append(LABEL_RATE_STABLE)
    return checks


# ---- snapshots, the feature store, the training set --------------------------------------------

MATCHES_VALIDATED_DROP = Check(
    "matches_validated_drop",
    True,
    "The month's snapshot holds exactly the month's validated drop: the same number of rows and "
    "the same content (a hash over user_id and the snapshot columns), one row per user (the "
    "partition's primary key), as_of and event_timestamp exactly the month's.",
)
REGISTRY_MATCHES_REPO = Check(
    "registry_matches_repo",
    True,
    "After apply, Feast's plan of the repository against the registry shows no pending change, "
    "and every feature view's source table exists with a column of a compatible type for each "
    "field.",
)
EVERY_USER_ONLINE = Check(
    "every_user_online",
    True,
    "Every user of the month's snapshots is online in every feature view with an event time at "
    "or after the month's; no online row belongs to a user no month ever had; the month is "
    "published and Feast's registry records its materialization interval for every feature view.",
)
ONLINE_MATCHES_OFFLINE = Check(
    "online_matches_offline",
    True,
    "For a seeded sample of the month's users, the values Feast's get_online_features serves "
    "through the churn_features service (on-demand features included) equal the training path's "
    "values for the same users at the month they are served from.",
)
ONE_ROW_PER_SNAPSHOT_USER = Check(
    "one_row_per_snapshot_user",
    True,
    "Exactly one row per user of labels_snapshots for the month.",
)
NO_UNEXPECTED_NULL_FEATURE = Check(
    "no_unexpected_null_feature",
    True,
    "No empty feature value, except where the feature's definition says it may be empty (tag "
    "`nullable`).",
)
LABEL_RATE_IN_RANGE = Check(
    "label_rate_in_range",
    True,
    "The share of churned users lies between 1% and 99%.",
)
TRAINING_CHECKS = [ONE_ROW_PER_SNAPSHOT_USER, NO_UNEXPECTED_NULL_FEATURE, LABEL_RATE_IN_RANGE]
FEATURE_DRIFT = Check(
    "feature_drift",
    False,
    "The month's training features compared with the previous month's, per feature, with "
    "Evidently's data drift tests (a warning: drift is reported, the month completes); the "
    "share of drifted features, each drifted one's test and score, and the HTML report.",
)

# ---- the model ---------------------------------------------------------------------------------

BEATS_BASELINES = Check(
    "beats_baselines",
    False,
    f"ROC AUC above {MIN_ROC_AUC} and log loss below the majority-class baseline's, on the "
    "hold-out. A candidate that fails is registered but not promoted; the month still completes.",
)
BEATS_CHAMPION = Check(
    "beats_champion",
    False,
    "Log loss on the month's hold-out not worse than the champion as of the month before (scored "
    "on the same rows). A candidate that fails is registered but not promoted.",
)
WELL_CALIBRATED = Check(
    "well_calibrated",
    False,
    "The model's probabilities read as churn rates on the hold-out: the expected calibration "
    f"error (by decile of prediction, |mean prediction - churn rate| weighted by users) is at most "
    f"{MAX_CALIBRATION_ERROR}, or, on a hold-out too small for that, twice what sampling alone "
    "gives a calibrated model. A warning: the ranking may still be good, the scores are not rates.",
)
ONE_SCORE_PER_USER = Check(
    "one_score_per_user",
    True,
    "Every user of the month's labels snapshot has exactly one score, every score lies in [0, 1], "
    "and every score names the model version that made it (no scores before any promotion).",
)
