"""Sample monthly drops: realistic, seeded, vectorised.

`generate_drops(...)` writes `month_000 ...` folders in the drop format of DESIGN.md. Column names,
order, types, allowed values and formatting all come from the table specs; this module only knows
how a subscriber base behaves:

- category mixes of the real data: contract 55% month-to-month / 21% one year / 24% two year,
  internet 44% fiber / 34% DSL / 22% none, 16% seniors; monthly fee driven by internet service,
  streaming and add-ons; total_paid about months_active x monthly_fee (blank when months_active=0);
- churn around 25%, more likely with month-to-month contracts, fiber, failed payments, support
  tickets and falling watch hours (a quarter of users are disengaging: their viewing declines);
- month to month: months_active grows by one (capped at 72, the range of the real data),
  total_paid by a month's fee, usage changes for everyone, payments, support and the churn flag for
  a fraction of users. With `dynamic`, users whose flag was set leave and new users sign up.

Everything is drawn from one seeded numpy Generator in a fixed order, and pyarrow writes the CSVs,
so the same arguments give byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from streamflow_assets.files import atomic_write
from streamflow_assets.settings import add_months, month_end
from streamflow_assets.table_specs import (
    LABELS,
    PAYMENTS_AGG_90D,
    SUBSCRIPTIONS,
    SUPPORT_AGG_90D,
    TABLES,
    USAGE_AGG_30D,
    USERS,
    Column,
    TableSpec,
)

CONTRACT_MIX = {"Month-to-month": 0.55, "One year": 0.21, "Two year": 0.24}
NET_SERVICE_MIX = {"Fiber optic": 0.44, "DSL": 0.34, "No": 0.22}
SENIOR_SHARE = 0.16
TARGET_CHURN_RATE = 0.25
MONTHLY_REDRAW_SHARE = 0.3
"""Share of users whose payments, support and churn flag change from one month to the next."""

_LETTERS = 26**5
_ID_SPACE = 10_000 * _LETTERS
_EPOCH = np.datetime64("1970-01-01", "D")


def month_folder(index: int) -> str:
    return f"month_{index:03d}"


@dataclass
class _Population:
    """The subscriber base, one array entry per user, carried from month to month."""

    code: np.ndarray  # user_id as an integer in [0, _ID_SPACE)
    signup: np.ndarray  # datetime64[D]
    gender: np.ndarray  # index into the allowed values
    senior: np.ndarray
    family: np.ndarray
    dependents: np.ndarray
    contract: np.ndarray
    net: np.ndarray
    stream_tv: np.ndarray
    stream_movies: np.ndarray
    add_ons: np.ndarray  # (n, 4) bool
    paperless: np.ndarray
    months_active: np.ndarray
    monthly_fee: np.ndarray
    total_paid: np.ndarray  # NaN = blank
    disengaging: np.ndarray
    watch_prev: np.ndarray
    watch: np.ndarray
    session_mins: np.ndarray
    devices: np.ndarray
    skips: np.ndarray
    rebuffers: np.ndarray
    failed_payments: np.ndarray
    tickets: np.ndarray
    resolution_hrs: np.ndarray
    churn: np.ndarray

    def __len__(self) -> int:
        return len(self.code)

    def select(self, keep: np.ndarray) -> _Population:
        return _Population(**{k: v[keep] for k, v in vars(self).items()})

    def concat(self, other: _Population) -> _Population:
        return _Population(
            **{k: np.concatenate([v, getattr(other, k)]) for k, v in vars(self).items()}
        )


def _index(spec: TableSpec, column: str, value: str) -> int:
    allowed = spec.column(column).allowed
    assert allowed is not None
    return allowed.index(value)


def _draw_category(rng: np.random.Generator, spec: TableSpec, column: str, mix: dict, n: int):
    allowed = spec.column(column).allowed
    assert allowed is not None and set(mix) == set(allowed), (column, mix)
    return rng.choice(len(allowed), size=n, p=[mix[v] for v in allowed])


FIBER = _index(SUBSCRIPTIONS, "net_service", "Fiber optic")
DSL = _index(SUBSCRIPTIONS, "net_service", "DSL")
NO_NET = _index(SUBSCRIPTIONS, "net_service", "No")
MONTH_TO_MONTH = _index(SUBSCRIPTIONS, "contract_type", "Month-to-month")
TWO_YEAR = _index(SUBSCRIPTIONS, "contract_type", "Two year")


def _new_codes(rng: np.random.Generator, n: int, taken: np.ndarray) -> np.ndarray:
    """n distinct user_id codes, none of them in `taken`."""
    codes = np.empty(0, dtype=np.int64)
    while len(codes) < n:
        draw = rng.integers(0, _ID_SPACE, size=int((n - len(codes)) * 1.02) + 16)
        draw = draw[~np.isin(draw, taken) & ~np.isin(draw, codes)]
        _, first = np.unique(draw, return_index=True)
        codes = np.concatenate([codes, draw[np.sort(first)]])
    return codes[:n]


def _new_users(
    rng: np.random.Generator, n: int, as_of: date, taken: np.ndarray, newcomers: bool
) -> _Population:
    """n users as they stand on as_of; `newcomers` signed up this month (months_active 0)."""
    contract = _draw_category(rng, SUBSCRIPTIONS, "contract_type", CONTRACT_MIX, n)
    if newcomers:
        months_active = np.zeros(n, dtype=np.int64)
    else:
        # Longer contracts go with longer tenure, as in the real data.
        mean_tenure = np.choose(contract, [14.0, 40.0, 56.0])
        months_active = np.clip(np.rint(rng.gamma(2.0, mean_tenure / 2.0)), 0, 72).astype(np.int64)
    days_back = np.where(
        months_active == 0,
        rng.integers(0, as_of.day, size=n),  # signed up this month
        np.rint(months_active * 30.44 + rng.integers(0, 28, size=n)).astype(np.int64),
    )
    signup = np.datetime64(as_of, "D") - days_back

    senior = rng.random(n) < SENIOR_SHARE
    family = rng.random(n) < 0.48
    dependents = rng.random(n) < np.where(family, 0.55, 0.08)
    net = _draw_category(rng, SUBSCRIPTIONS, "net_service", NET_SERVICE_MIX, n)
    has_net = net != NO_NET
    stream_tv = has_net & (rng.random(n) < 0.49)
    stream_movies = has_net & (rng.random(n) < 0.50)
    add_ons = has_net[:, None] & (rng.random((n, 4)) < np.array([0.37, 0.44, 0.44, 0.37]))
    fee = np.choose(net, _by_net({FIBER: 70.0, DSL: 45.0, NO_NET: 19.5}))
    fee = fee + 9.5 * stream_tv + 9.5 * stream_movies + 4.5 * add_ons.sum(axis=1)
    fee = np.clip(np.round(fee + rng.normal(0, 2.5, n), 2), 18.25, 118.75)
    total_paid = months_active * fee * rng.uniform(0.96, 1.04, n)
    total_paid[months_active == 0] = np.nan

    disengaging = rng.random(n) < 0.25
    watch = rng.gamma(2.0, 20.0, n)
    watch_prev = watch / np.exp(_watch_drift(rng, disengaging))
    pop = _Population(
        code=_new_codes(rng, n, taken),
        signup=signup,
        gender=rng.integers(0, 2, n),
        senior=senior,
        family=family,
        dependents=dependents,
        contract=contract,
        net=net,
        stream_tv=stream_tv,
        stream_movies=stream_movies,
        add_ons=add_ons,
        paperless=rng.random(n) < 0.59,
        months_active=months_active,
        monthly_fee=fee,
        total_paid=total_paid,
        disengaging=disengaging,
        watch_prev=watch_prev,
        watch=watch,
        session_mins=rng.gamma(4.0, 11.0, n),
        devices=1 + rng.poisson(1.0, n),
        skips=np.zeros(n, dtype=np.int64),
        rebuffers=np.zeros(n, dtype=np.int64),
        failed_payments=np.zeros(n, dtype=np.int64),
        tickets=np.zeros(n, dtype=np.int64),
        resolution_hrs=np.zeros(n),
        churn=np.zeros(n, dtype=bool),
    )
    everyone = np.ones(n, dtype=bool)
    _draw_weekly_usage(rng, pop)
    _draw_payments_and_support(rng, pop, everyone)
    return pop


def _by_net(values: dict[int, float]) -> list[float]:
    return [values[i] for i in range(len(values))]


def _watch_drift(rng: np.random.Generator, disengaging: np.ndarray) -> np.ndarray:
    """Log change of a user's watch hours over a month."""
    return np.where(disengaging, -0.30, 0.02) + rng.normal(0, 0.12, len(disengaging))


def _draw_weekly_usage(rng: np.random.Generator, pop: _Population) -> None:
    n = len(pop)
    pop.skips = rng.poisson(2.0 + 3.0 * pop.disengaging, n)
    pop.rebuffers = rng.poisson(np.choose(pop.net, _by_net({FIBER: 0.6, DSL: 1.6, NO_NET: 1.0})))


def _draw_payments_and_support(rng: np.random.Generator, pop: _Population, who: np.ndarray):
    n = int(who.sum())
    m2m = pop.contract[who] == MONTH_TO_MONTH
    fiber = pop.net[who] == FIBER
    pop.failed_payments[who] = rng.poisson(0.12 + 0.35 * m2m + 0.15 * pop.paperless[who], n)
    tickets = rng.poisson(0.25 + 0.45 * fiber + 0.25 * pop.senior[who], n)
    pop.tickets[who] = tickets
    pop.resolution_hrs[who] = np.where(tickets > 0, np.round(rng.gamma(2.0, 12.0, n), 2), 0.0)


def _churn_logit(pop: _Population) -> np.ndarray:
    """Churn log-odds without the intercept."""
    return (
        1.3 * (pop.contract == MONTH_TO_MONTH)
        - 1.0 * (pop.contract == TWO_YEAR)
        + 0.7 * (pop.net == FIBER)
        - 0.4 * (pop.net == NO_NET)
        + 0.35 * pop.senior
        + 0.25 * pop.paperless
        + 0.55 * pop.failed_payments
        + 0.40 * pop.tickets
        - 2.0 * np.log(pop.watch / pop.watch_prev)
        - 0.02 * pop.months_active
    )


def _intercept_for(logit: np.ndarray, rate: float) -> float:
    """The intercept that makes the mean churn probability equal `rate` (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(logit + mid)))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _draw_churn(rng: np.random.Generator, pop: _Population, who: np.ndarray, intercept: float):
    p = 1 / (1 + np.exp(-(_churn_logit(pop)[who] + intercept)))
    pop.churn[who] = rng.random(int(who.sum())) < p


def _advance(
    rng: np.random.Generator, pop: _Population, intercept: float, churn: bool = True
) -> None:
    """Move the population on by one month (and redraw some churn flags, unless told not to)."""
    n = len(pop)
    pop.months_active = np.minimum(pop.months_active + 1, 72)
    paid = np.nan_to_num(pop.total_paid)
    pop.total_paid = np.round(paid + pop.monthly_fee * rng.uniform(0.97, 1.03, n), 2)
    pop.watch_prev = pop.watch
    pop.watch = pop.watch * np.exp(_watch_drift(rng, pop.disengaging))
    pop.session_mins = 0.7 * pop.session_mins + 0.3 * rng.gamma(4.0, 11.0, n)
    moved = rng.random(n) < 0.1
    pop.devices = np.where(moved, 1 + rng.poisson(1.0, n), pop.devices)
    _draw_weekly_usage(rng, pop)
    changed = rng.random(n) < MONTHLY_REDRAW_SHARE
    _draw_payments_and_support(rng, pop, changed)
    if churn:
        _draw_churn(rng, pop, rng.random(n) < MONTHLY_REDRAW_SHARE, intercept)


# ---- writing: every column's name, order and format comes from the table specs ----------------


def _user_ids(code: np.ndarray) -> pa.Array:
    digits, letters = np.divmod(code, _LETTERS)
    chars = np.empty((len(code), 10), dtype=np.uint8)
    for i in range(4):
        digits, chars[:, 3 - i] = np.divmod(digits, 10)
    chars[:, :4] += ord("0")
    chars[:, 4] = ord("-")
    for i in range(5):
        letters, chars[:, 9 - i] = np.divmod(letters, 26)
    chars[:, 5:] += ord("A")
    # Straight from the bytes: pa.array() of an "S10" array hands back a ChunkedArray from about
    # 1.8M ids on (and takes 20x longer).
    ids = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(10), len(code), [None, pa.py_buffer(chars)]
    )
    return ids.cast(pa.binary()).cast(pa.string())


def _encode(column: Column, values: np.ndarray | pa.Array, null: np.ndarray | None) -> pa.Array:
    if isinstance(values, pa.Array):
        return values
    if column.sql_type == "TEXT":
        assert column.allowed is not None, column.name
        return pa.array(np.array(column.allowed, dtype=object)[values], mask=null)
    if column.sql_type == "BOOLEAN":
        return pa.array(np.where(values, "True", "False"), mask=null)
    if column.sql_type == "INTEGER":
        return pa.array(values.astype(np.int64), mask=null)
    if column.sql_type == "DATE":
        return pa.array(values.astype("datetime64[D]"), mask=null)
    if column.sql_type == "NUMERIC":
        null = np.isnan(values) if null is None else null | np.isnan(values)
        cents = np.rint(np.where(null, 0.0, values) * 100).astype(np.int64)
        unscaled = pa.array(cents, mask=null).cast(pa.decimal128(19, 0))
        # Same unscaled integers read with scale 2: cents become amounts with two decimals.
        return pa.Array.from_buffers(pa.decimal128(19, 2), len(unscaled), unscaled.buffers())
    raise ValueError(f"no encoding for {column.sql_type}")


def _table_values(pop: _Population, ids: pa.Array) -> dict[str, dict[str, object]]:
    """Each table's columns as arrays, keyed by the spec's column names."""
    no_net = pop.net == NO_NET
    return {
        USERS.name: {
            "user_id": ids,
            "signup_date": pop.signup,
            "user_gender": pop.gender,
            "user_is_senior": pop.senior,
            "has_family": pop.family,
            "has_dependents": pop.dependents,
        },
        SUBSCRIPTIONS.name: {
            "user_id": ids,
            "months_active": pop.months_active,
            "plan_stream_tv": (pop.stream_tv, no_net),
            "plan_stream_movies": (pop.stream_movies, no_net),
            "contract_type": pop.contract,
            "paperless_billing": pop.paperless,
            "monthly_fee": pop.monthly_fee,
            "total_paid": pop.total_paid,
            "net_service": pop.net,
            "add_on_security": pop.add_ons[:, 0],
            "add_on_backup": pop.add_ons[:, 1],
            "add_on_device_protect": pop.add_ons[:, 2],
            "add_on_support": pop.add_ons[:, 3],
        },
        USAGE_AGG_30D.name: {
            "user_id": ids,
            "watch_hours_30d": pop.watch,
            "avg_session_mins_7d": pop.session_mins,
            "unique_devices_30d": pop.devices,
            "skips_7d": pop.skips,
            "rebuffer_events_7d": pop.rebuffers,
        },
        PAYMENTS_AGG_90D.name: {"user_id": ids, "failed_payments_90d": pop.failed_payments},
        SUPPORT_AGG_90D.name: {
            "user_id": ids,
            "support_tickets_90d": pop.tickets,
            "ticket_avg_resolution_hrs_90d": pop.resolution_hrs,
        },
        LABELS.name: {"user_id": ids, "churn_label": pop.churn},
    }


def write_table(spec: TableSpec, values: dict[str, object], path: Path) -> None:
    """Write one drop file: header row, then one row per user, in the spec's column order."""
    if set(values) != set(spec.column_names):
        raise ValueError(f"{spec.name}: generator columns differ from the table spec")
    arrays = []
    for column in spec.columns:
        value = values[column.name]
        data, null = value if isinstance(value, tuple) else (value, None)
        arrays.append(_encode(column, data, null))
    table = pa.Table.from_arrays(arrays, names=list(spec.column_names))
    with atomic_write(path) as tmp, open(tmp, "wb") as out:
        out.write((",".join(spec.column_names) + "\n").encode())
        # No value of a drop holds a comma or a quote, so nothing needs quoting.
        pa_csv.write_csv(
            table, out, pa_csv.WriteOptions(include_header=False, quoting_style="none")
        )


def generate_drops(
    out: Path,
    *,
    users: int,
    months: int,
    seed: int = 0,
    first_month: date = date(2024, 1, 1),
    dynamic: bool = False,
) -> list[Path]:
    """Write `months` monthly drops of about `users` users each under `out`; return the folders."""
    if users < 1 or months < 1:
        raise ValueError("users and months must be at least 1")
    rng = np.random.default_rng(seed)
    as_of = month_end(first_month)
    pop = _new_users(rng, users, as_of, np.empty(0, dtype=np.int64), newcomers=False)
    intercept = _intercept_for(_churn_logit(pop), TARGET_CHURN_RATE)
    _draw_churn(rng, pop, np.ones(users, dtype=bool), intercept)

    folders = []
    for index in range(months):
        if index > 0:
            as_of = month_end(add_months(first_month, index))
            joiners = 0
            if dynamic:
                leavers = pop.churn.copy()
                pop = pop.select(~leavers)
                joiners = round(leavers.sum() * rng.uniform(0.9, 1.1))
            _advance(rng, pop, intercept, churn=not dynamic)
            if joiners:
                new = _new_users(rng, joiners, as_of, pop.code, newcomers=True)
                pop = pop.concat(new)
            if dynamic:
                # Last month's churners left, so everyone here stayed: the month's churn is drawn
                # for all of them afresh, at the target rate for this month's mix of users (the
                # rate would otherwise fall month after month: 25% -> 13% -> 9%).
                month_intercept = _intercept_for(_churn_logit(pop), TARGET_CHURN_RATE)
                _draw_churn(rng, pop, np.ones(len(pop), dtype=bool), month_intercept)
        folder = out / month_folder(index)
        folder.mkdir(parents=True, exist_ok=True)
        ids = _user_ids(pop.code)
        tables = _table_values(pop, ids)
        for spec in TABLES:
            write_table(spec, tables[spec.name], folder / spec.file_name)
        folders.append(folder)
    return folders
