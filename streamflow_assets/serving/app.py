"""The HTTP API over Feast's online store: `churn_features` by user, one or up to 1,000 at once.

Reads go through Feast's own online read path (`FeatureStore.get_online_features_async`) with the
feature service training uses, so a model sees online exactly the features it trained on. No SQL
is built from request text: a user_id is checked against its pattern and passed to Feast as a
value.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import Body, FastAPI, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from feast import FeatureService, FeatureStore
from feast.errors import FeatureServiceNotFoundException
from pydantic import BaseModel, Field, StringConstraints
from threadpoolctl import threadpool_limits

from streamflow_assets.adapters.feast import batched_read_rows, online_columns, type_checks_off
from streamflow_assets.db import get_engine
from streamflow_assets.feature_store.online import published_months
from streamflow_assets.feature_store.repo import FEATURE_SERVICE, feature_store
from streamflow_assets.model import LoadedModel
from streamflow_assets.model import load as load_model
from streamflow_assets.model_registry import CHAMPION, MODEL_NAME, Registry, RegistryError
from streamflow_assets.months import as_of
from streamflow_assets.serving.limits import BodyLimit, validation_error
from streamflow_assets.serving.metrics import (
    RequestMetrics,
    exposition,
    serving_champion,
    timed_online_read,
)
from streamflow_assets.settings import Settings
from streamflow_assets.table_specs import USER_ID_PATTERN

log = logging.getLogger(__name__)

MAX_BATCH = 1000
EXAMPLE_USERS = ("0034-SNFAF", "8350-PCWUO")
"""Users of every month of the sample `streamflow run` writes: the docs' examples answer."""
EXAMPLE_USER = EXAMPLE_USERS[0]

UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN, min_length=10, max_length=10)]
FeatureValue = bool | int | float | str | None


class UserFeatures(BaseModel):
    user_id: str = Field(examples=[EXAMPLE_USER])
    as_of: date = Field(
        description="The newest month-end the values come from.", examples=["2024-03-31"]
    )
    feature_views: dict[str, date] = Field(
        description="The as_of of each feature view's values (a user missing from a month's "
        "file keeps an older month's values for that view).",
        examples=[{"subs_profile_fv": "2024-03-31", "usage_agg_30d_fv": "2024-03-31"}],
    )
    features: dict[str, FeatureValue] = Field(
        description=f"Every feature of the `{FEATURE_SERVICE}` service; empty values are null.",
        examples=[{"months_active": 34, "net_service": "DSL", "tenure_bucket": "25-48"}],
    )
    online_as_of: date | None = Field(
        description="The month-end of the newest month online (null before any is published).",
        examples=["2024-03-31"],
    )
    stale: bool = Field(
        description="True when the user's newest values are older than the newest month online: "
        "the user was not in that month's drop (left, or missing from it).",
        examples=[False],
    )
    expired_feature_views: list[str] = Field(
        description="Feature views whose values for the user are older than the view's ttl, "
        "counted back from the newest month online.",
        examples=[[]],
    )


class BatchRequest(BaseModel):
    user_ids: list[UserId] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"1 to {MAX_BATCH} user_ids shaped like {EXAMPLE_USER}; repeats are "
        "answered once.",
        examples=[list(EXAMPLE_USERS)],
    )


class BatchResponse(BaseModel):
    users: list[UserFeatures]
    unknown_user_ids: list[str] = Field(
        description="Requested user_ids the online store does not hold.", examples=[["0000-ZZZZZ"]]
    )


class PredictRequest(BaseModel):
    user_id: UserId = Field(examples=[EXAMPLE_USER])


class Prediction(BaseModel):
    user_id: str = Field(examples=[EXAMPLE_USER])
    churn_probability: float = Field(ge=0, le=1, examples=[0.27])
    model_version: str = Field(
        description=f"The `{CHAMPION}` version of the registered MLflow model `{MODEL_NAME}`.",
        examples=[f"{MODEL_NAME} v3 (2024-03)"],
    )
    as_of: date = Field(description="The newest month-end the features come from.")
    features: dict[str, FeatureValue] = Field(description="The features the model was given.")


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    online_month: str | None = Field(
        description="The newest month materialized into the online store (YYYY-MM), null when "
        "nothing is online yet.",
        examples=["2024-03"],
    )
    feature_service: str = Field(examples=[FEATURE_SERVICE])
    champion: str | None = Field(
        description=f"The model /predict uses: the `{CHAMPION}` version of `{MODEL_NAME}`, "
        "null before any candidate was promoted.",
        examples=[f"{MODEL_NAME} v3 (2024-03)"],
    )


class Problem(BaseModel):
    detail: str


class Online:
    """The feature store and service one API process serves from."""

    def __init__(self, store: FeatureStore, service: FeatureService, month: OnlineMonth):
        self.store = store
        self.service = service
        self.month = month
        self.feature_names = [
            f.name for p in self.service.feature_view_projections for f in p.features
        ]
        on_demand = {v.name for v in store.list_on_demand_feature_views()}
        view_of = {
            f.name: p.name
            for p in self.service.feature_view_projections
            if p.name not in on_demand
            for f in p.features
        }
        # All of a view's features carry its row's event time: one of them tells the view's.
        self.stamp_of = {view: f"{feature}__ts" for feature, view in view_of.items()}
        self.batched_rows = batched_read_rows(store.config)
        self.ttl_days = {
            view.name: view.ttl.days
            for view in store.list_feature_views()
            if view.name in self.stamp_of and view.ttl
        }

    async def read(self, user_ids: list[str]) -> tuple[list[dict], list[str]]:
        """Each known user's body (the UserFeatures shape, dates as ISO strings), and the
        user_ids the online store does not hold."""
        found: list[dict] = []
        unknown: list[str] = []
        online_as_of = await self.month.as_of()
        # Feast reads every view of a request in one statement (one snapshot: all of a user's
        # views from the same published month) only up to a number of result rows; beyond it,
        # one statement per view. Larger requests are read in chunks that stay under it.
        chunk = max(1, self.batched_rows // max(len(self.stamp_of), 1))
        for i in range(0, len(user_ids), chunk):
            part = user_ids[i : i + chunk]
            with timed_online_read():
                response = await self.store.get_online_features_async(
                    features=self.service, entity_rows=[{"user_id": u} for u in part]
                )
            self._collect(part, online_columns(response), online_as_of, found, unknown)
        return found, unknown

    def _collect(
        self,
        user_ids: list[str],
        columns: dict,
        online_as_of: date | None,
        found: list[dict],
        unknown: list[str],
    ) -> None:
        online = online_as_of.isoformat() if online_as_of else None
        days: dict[int, str] = {}  # a month's users share a few event times
        for i, user_id in enumerate(user_ids):
            views: dict[str, str] = {}
            for view, stamp in self.stamp_of.items():
                if seconds := columns[stamp][i]:
                    if (day := days.get(seconds)) is None:
                        day = days[seconds] = (
                            datetime.fromtimestamp(seconds, UTC).date().isoformat()
                        )
                    views[view] = day
            if not views:
                unknown.append(user_id)
                continue
            features = {name: columns[name][i] for name in self.feature_names}
            newest = max(views.values())
            expired = (
                sorted(
                    view
                    for view, day in views.items()
                    if view in self.ttl_days
                    and (online_as_of - date.fromisoformat(day)).days > self.ttl_days[view]
                )
                if online_as_of
                else []
            )
            found.append(
                {
                    "user_id": user_id,
                    "as_of": newest,
                    "feature_views": views,
                    "features": features,
                    "online_as_of": online,
                    "stale": online is not None and newest < online,
                    "expired_feature_views": expired,
                }
            )


class OnlineMonth:
    """The newest month online (the staleness reference), looked up again every CHECK_SECONDS:
    a month published meanwhile is the reference within seconds, without a restart."""

    CHECK_SECONDS = 5.0

    def __init__(self, settings: Settings):
        self._settings = settings
        self._as_of: date | None = None
        self._checked = float("-inf")

    async def as_of(self) -> date | None:
        if time.monotonic() - self._checked >= self.CHECK_SECONDS:
            self._as_of = await run_in_threadpool(self._newest)
            self._checked = time.monotonic()
        return self._as_of

    def _newest(self) -> date | None:
        with get_engine(self._settings).connect() as conn:
            published = published_months(conn)
        return as_of(published[-1]) if published else None


class NotReady(RuntimeError):
    """The feature service is not in the registry yet (nothing applied), or no model is saved."""


class Models:
    """The current champion (the registry's alias), looked up again every CHECK_SECONDS so a new
    champion is served without a restart. When the registry does not answer or the new version
    cannot be loaded, the champion already loaded keeps serving (the error is logged)."""

    CHECK_SECONDS = 5.0

    def __init__(self, settings: Settings):
        self._settings = settings
        self._registry: Registry | None = None
        self._model: LoadedModel | None = None
        self._version: int | None = None
        self._checked = float("-inf")
        self._why: str | None = None
        self._lock = threading.Lock()

    def current(self) -> LoadedModel | None:
        """The champion when it was looked up less than CHECK_SECONDS ago (no thread hop, no
        lock: the common case of a request); None when it is due for a look-up."""
        model = self._model
        if model is not None and time.monotonic() - self._checked < self.CHECK_SECONDS:
            return model
        return None

    def champion(self) -> LoadedModel:
        with self._lock:
            if time.monotonic() - self._checked >= self.CHECK_SECONDS:
                self._refresh()
            if self._model is None:
                raise NotReady(self._why or f"no {CHAMPION} of {MODEL_NAME} yet")
            return self._model

    def _refresh(self) -> None:
        self._checked = time.monotonic()
        self._why = None
        try:
            if self._registry is None:
                self._registry = Registry(self._settings)
            decision = self._registry.current_champion()
            if decision is None:
                self._model = self._version = None
                self._why = (
                    f"no {CHAMPION} of {MODEL_NAME} yet: materialize churn_model (a candidate is "
                    "promoted when it beats the baselines)"
                )
            elif decision.version != self._version:
                self._model = load_model(self._registry, decision)
                self._version = decision.version
                log.info("serving %s", self._model.version)
            serving_champion(self.version)
        except RegistryError as exc:
            log.error("%s; still serving %s", exc, self._model.version if self._model else "none")
            self._why = str(exc)

    @property
    def version(self) -> str | None:
        return self._model.version if self._model else None


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API over the given settings (read from the environment once, when not given)."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.online = None
        app.state.models = Models(settings)
        # One row per request: the model's OpenMP threads would cost more than they save, and
        # with several workers on few cores they spin against each other (/predict at c=8 on 2
        # cores: p99 3.7 s with them, 51 ms without).
        # The API builds Feast's arguments itself: Feast need not check their types per call.
        with threadpool_limits(limits=1), type_checks_off():
            yield

    def online(request: Request) -> Online:
        """The feature service, looked up on first use: the API may start before `feast apply`."""
        if request.app.state.online is None:
            store = feature_store(settings)
            try:
                service = store.get_feature_service(FEATURE_SERVICE, allow_cache=False)
            except FeatureServiceNotFoundException:
                raise NotReady(
                    f"feature service {FEATURE_SERVICE} is not in the registry: materialize "
                    "feast_registry (feast apply) first"
                ) from None
            request.app.state.online = Online(store, service, OnlineMonth(settings))
        return request.app.state.online

    # Swagger UI (/docs) and ReDoc (/redoc) from files installed with fastapi-offline, not a
    # CDN: the docs work on a machine without internet.
    app = FastAPIOffline(
        title="StreamFlow online features",
        version="1",
        description=f"The `{FEATURE_SERVICE}` features of a subscriber, read from Feast's online "
        "store: the same feature service the training CSVs come from.",
        lifespan=lifespan,
    )

    app.add_middleware(BodyLimit)
    app.add_middleware(RequestMetrics)  # outermost: it counts what the body limit refuses too
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady):
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.exception_handler(Exception)
    async def unavailable(request: Request, exc: Exception):  # the store, not the request
        log.exception("online store read failed")
        return JSONResponse(
            status_code=503, content={"detail": f"online store unavailable: {type(exc).__name__}"}
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus' text format: requests and latency per endpoint and status, the online
        store's read latency, the champion served."""
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    @app.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Problem, "description": "database or registry down"}},
        summary="Whether the database and the Feast registry answer, and which month is online",
    )
    def health(request: Request):
        try:
            with get_engine(settings).connect() as conn:
                published = published_months(conn)
            store = online(request).store
            store.registry.list_feature_views(store.project, allow_cache=False)
        except NotReady:
            raise
        except Exception as exc:
            raise HTTPException(503, f"not ready: {exc}".splitlines()[0]) from None
        month = published[-1] if published else None
        models = request.app.state.models
        with contextlib.suppress(NotReady):  # features are served; /predict says why it cannot
            models.champion()
        return Health(
            status="ok",
            online_month=month,
            feature_service=FEATURE_SERVICE,
            champion=models.version,
        )

    @app.get(
        "/features/{user_id}",
        response_model=UserFeatures,
        responses={
            404: {"model": Problem, "description": "the user is not in the online store"},
            503: {"model": Problem, "description": "the online store does not answer"},
        },
        summary="One user's features",
    )
    async def user_features(
        request: Request,
        user_id: Annotated[
            str,
            Path(
                pattern=USER_ID_PATTERN,
                description="Four digits, a dash, five capitals.",
                examples=[EXAMPLE_USER],
            ),
        ],
    ):
        found, _ = await online(request).read([user_id])
        if not found:
            raise HTTPException(404, f"user {user_id} is not in the online store")
        # Built to the response model's shape already: skip re-validating it per request.
        return JSONResponse(found[0])

    @app.post(
        "/features",
        response_model=BatchResponse,
        responses={503: {"model": Problem, "description": "the online store does not answer"}},
        summary=f"Features of up to {MAX_BATCH} users at once",
    )
    async def batch_features(request: Request, body: Annotated[BatchRequest, Body()]):
        user_ids = list(dict.fromkeys(body.user_ids))
        found, unknown = await online(request).read(user_ids)
        return JSONResponse({"users": found, "unknown_user_ids": unknown})

    @app.post(
        "/predict",
        response_model=Prediction,
        responses={
            404: {"model": Problem, "description": "the user is not in the online store"},
            409: {"model": Problem, "description": "the user is stale: not in the newest month"},
            503: {"model": Problem, "description": "no model yet, or the store does not answer"},
        },
        summary="A user's churn probability from the online features and the champion model",
    )
    async def predict(request: Request, body: Annotated[PredictRequest, Body()]):
        found, _ = await online(request).read([body.user_id])
        if not found:
            raise HTTPException(404, f"user {body.user_id} is not in the online store")
        user = found[0]
        if user["stale"]:
            raise HTTPException(
                409,
                f"user {body.user_id} is stale: their newest values are from {user['as_of']}, "
                f"the newest month online ends {user['online_as_of']} (not in that month's drop); "
                "not scored",
            )
        models = request.app.state.models
        model = models.current() or await run_in_threadpool(models.champion)
        used = {name: user["features"][name] for name in model.features.names}
        return JSONResponse(
            {
                "user_id": body.user_id,
                "churn_probability": float(model.score([used])[0]),
                "model_version": model.version,
                "as_of": user["as_of"],
                "features": used,
            }
        )

    return app
