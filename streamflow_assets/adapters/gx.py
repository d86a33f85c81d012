"""Great Expectations 1.x: the only module that imports it.

Two private details are relied on: an expectation's `_validate(metrics, ...)` hook and its
`metric_dependencies` (overridden by `UnexpectedRowCount` to count rows instead of fetching them),
and `ProgressBarsConfig` from GX's config types (to turn its progress bars off).
"""

from __future__ import annotations

import inspect
import warnings
from typing import ClassVar

from streamflow_assets.adapters import private_detail, require

SUPPORTED = ">=1.5,<2"

with warnings.catch_warnings():
    # GX warns at import about optional packages and old dependencies it can do without.
    warnings.simplefilter("ignore")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

__all__ = ["UnexpectedRowCount", "context", "gx", "gxe"]


def check(installed: str | None = None) -> None:
    """Great Expectations is a version we know, with the private details used here."""
    require("great_expectations", SUPPORTED, installed)
    base = gxe.UnexpectedRowsExpectation
    validate = getattr(base, "_validate", None)
    private_detail(
        "great_expectations",
        "Expectation._validate(metrics, runtime_configuration, execution_engine)",
        validate is not None
        and list(inspect.signature(validate).parameters)[:2] == ["self", "metrics"],
    )
    private_detail(
        "great_expectations",
        "UnexpectedRowsExpectation.metric_dependencies",
        "unexpected_rows_query.table" in getattr(base, "metric_dependencies", ()),
    )


check()


class UnexpectedRowCount(gxe.UnexpectedRowsExpectation):
    """UnexpectedRowsExpectation that only counts the rows.

    The stock expectation runs its query twice, once to fetch the rows and once to count them;
    on the quick pass only the count matters. A failed one is asked again as the stock
    expectation, which brings back the rows.
    """

    metric_dependencies: ClassVar[tuple[str, ...]] = ("unexpected_rows_query.row_count",)

    def _validate(self, metrics: dict, runtime_configuration=None, execution_engine=None):
        count = metrics["unexpected_rows_query.row_count"]
        return {"success": count == 0, "result": {"observed_value": count}}

    def with_rows(self) -> gxe.UnexpectedRowsExpectation:
        return gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=self.unexpected_rows_query,
            description=self.description,
            meta=self.meta,
        )


def context():
    """An ephemeral GX context with its progress bars off."""
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx
