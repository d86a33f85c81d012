"""Feast: the private details this project relies on, in one place.

- The online format: Feast's entity-key serialization (version 3) and the `feast.types.Value`
  protobuf, which the set-based writer (feature_store/online.py) produces inside PostgreSQL,
  and the online table name Feast's PostgreSQL store uses for a feature view; in Redis, the key
  of an entity and the hash fields of a feature view's values and event time.
- Repository parsing and apply, as the `feast` CLI does them (`feast.repo_operations`).
- Feast's run-time argument type checks (typeguard), which the API turns off while serving.

Everything else goes through Feast's public API (`FeatureStore`, the registry).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from pathlib import Path

from feast import FeatureView
from feast.diff.property_diff import TransitionType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores import helpers as _online_helpers
from feast.project import Project
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.repo_config import RepoConfig
from feast.repo_contents import RepoContents
from feast.value_type import ValueType

from streamflow_assets.adapters import private_detail, require
from streamflow_assets.report import OnlineStoreUnavailableError
from streamflow_assets.settings import ONLINE_STORE_VAR, REDIS_URL_VAR

SUPPORTED = ">=0.67,<0.68"
ENTITY_KEY_VERSION = 3

__all__ = [
    "ENTITY_KEY_VERSION",
    "Project",
    "RepoContents",
    "TransitionType",
    "Value",
    "ValueType",
    "apply_plan",
    "batched_read_rows",
    "entity_key_prefix",
    "online_columns",
    "online_table_name",
    "parse_repo",
    "redis_client",
    "redis_fields",
    "redis_key_suffix",
    "repo_files",
    "type_checks_off",
    "value_field_number",
]


def check(installed: str | None = None) -> None:
    """Feast is a version we know, with the private details used here."""
    require("feast", SUPPORTED, installed)
    from feast import repo_operations

    for name in ("parse_repo", "get_repo_files", "extract_objects_for_apply_delete"):
        private_detail("feast", f"feast.repo_operations.{name}", hasattr(repo_operations, name))
    private_detail(
        "feast",
        "feast.infra.online_stores.helpers.compute_table_id(project, table)",
        hasattr(_online_helpers, "compute_table_id"),
    )
    from feast.infra.online_stores.postgres_online_store import postgres

    private_detail(
        "feast",
        "PostgreSQLOnlineStore reads every view in one statement up to MAX_BATCHED_RESULT_ROWS",
        hasattr(postgres, "MAX_BATCHED_RESULT_ROWS")
        and hasattr(postgres.PostgreSQLOnlineStore, "_construct_batched_query_and_params"),
    )
    from feast.infra.online_stores import redis

    private_detail(
        "feast",
        "the Redis store's key (helpers._redis_key), field hash (helpers._mmh3) and view name "
        "(redis._versioned_fv_name)",
        hasattr(_online_helpers, "_redis_key")
        and hasattr(_online_helpers, "_mmh3")
        and hasattr(redis, "_versioned_fv_name"),
    )
    from feast.online_response import OnlineResponse

    private_detail(
        "feast",
        "OnlineResponse keeps its features' value types in _feature_types",
        "_feature_types" in inspect.getsource(OnlineResponse.__init__),
    )
    params = list(inspect.signature(serialize_entity_key).parameters)
    private_detail(
        "feast",
        "serialize_entity_key(entity_key, entity_key_serialization_version)",
        params[:2] == ["entity_key", "entity_key_serialization_version"],
    )


check()


def value_field_number(field: str) -> int:
    """The protobuf field number of a `feast.types.Value` member (e.g. "int64_val")."""
    return Value.DESCRIPTOR.fields_by_name[field].number


def entity_key_prefix(join_key: str) -> bytes:
    """Feast's serialized entity key for one string join key, up to (not including) the value's
    4-byte length: the key of a user is this, the length of its UTF-8 id, then the id."""
    empty = serialize_entity_key(
        EntityKey(join_keys=[join_key], entity_values=[Value(string_val="")]), ENTITY_KEY_VERSION
    )
    return empty[:-4]


def batched_read_rows(config: RepoConfig) -> int:
    """How many result rows (entity rows x feature views) Feast's PostgreSQL online store reads
    in one statement, one snapshot of every view; beyond it, one statement per view."""
    from feast.infra.online_stores.postgres_online_store import postgres

    default = postgres.MAX_BATCHED_RESULT_ROWS
    return int(getattr(config.online_store, "max_batched_result_rows", default))


_PLAIN_VALUES = frozenset(
    {"int32_val", "int64_val", "float_val", "double_val", "string_val", "bool_val"}
)
"""`feast.types.Value` members whose Python value is the protobuf's own (no conversion)."""
_CONVERTED_STRINGS = frozenset({ValueType.UUID, ValueType.TIME_UUID})
"""Value types Feast stores as strings but hands back converted."""


def online_columns(response) -> dict[str, list]:
    """`OnlineResponse.to_dict(include_event_timestamps=True)`, a third of the time: plain
    values (numbers, strings, booleans) come straight off the protobuf; every other kind goes
    through Feast's own converter, as in `to_dict` (2.2 vs 0.7 ms for 100 users' 17 features)."""
    from feast.online_response import TIMESTAMP_POSTFIX
    from feast.type_map import feast_value_type_to_python_type as convert

    columns: dict[str, list] = {}
    types = response._feature_types
    proto = response.proto
    for name, vector in zip(proto.metadata.feature_names.val, proto.results, strict=True):
        kind = types.get(name)
        if kind in _CONVERTED_STRINGS:
            columns[name] = [convert(v, kind) for v in vector.values]
        else:
            columns[name] = [
                getattr(v, which)
                if (which := v.WhichOneof("val")) in _PLAIN_VALUES
                else (None if which is None else convert(v, kind))
                for v in vector.values
            ]
        columns[name + TIMESTAMP_POSTFIX] = [ts.seconds for ts in vector.event_timestamps]
    return columns


def online_table_name(config: RepoConfig, view: FeatureView) -> str:
    """The table of a feature view in Feast's PostgreSQL online store."""
    return _online_helpers.compute_table_id(config.project, view)


def redis_key_suffix(config: RepoConfig) -> bytes:
    """What follows the serialized entity key in the key of an entity in Feast's Redis store."""
    from feast.infra.online_stores.helpers import _redis_key

    empty = EntityKey(join_keys=["k"], entity_values=[Value(string_val="")])
    return _redis_key(config.project, empty, ENTITY_KEY_VERSION)[
        len(serialize_entity_key(empty, ENTITY_KEY_VERSION)) :
    ]


def redis_client(store):
    """The redis-py client (Redis or RedisCluster) Feast's Redis online store of `store` reads
    with, configured as Feast configures it, once it has answered a PING."""
    import redis

    try:
        client = store._get_provider().online_store._get_client(store.config.online_store)
        client.ping()
    except redis.exceptions.RedisError as exc:  # refused, timed out, a wrong password, ...
        where = store.config.online_store.connection_string.split(",")[0]
        raise OnlineStoreUnavailableError(
            f"the Redis online store at {where} does not answer ({exc}): start it, or fix "
            f"{REDIS_URL_VAR} (or set {ONLINE_STORE_VAR}=postgres)"
        ) from None
    return client


def redis_fields(config: RepoConfig, view: FeatureView) -> tuple[bytes, list[bytes]]:
    """(event time field, [value field of each feature]) of a feature view in the hash of an
    entity in Feast's Redis store, as its `online_write_batch` names them."""
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import _versioned_fv_name

    name = _versioned_fv_name(view, config)
    return f"_ts:{name}".encode(), [_mmh3(f"{name}:{f.name}") for f in view.features]


def repo_files(repo: Path) -> list[Path]:
    """The Python files the feast CLI reads from a repository (.feastignore respected)."""
    from feast.repo_operations import get_repo_files

    return get_repo_files(repo)


def parse_repo(repo: Path) -> RepoContents:
    """The objects of a repository, parsed as `feast apply` parses them (the caller makes the
    repository the working directory and puts it on sys.path, as the CLI does)."""
    from feast.repo_operations import parse_repo as _parse_repo

    return _parse_repo(repo)


def apply_plan(store, repo: RepoContents) -> tuple[list, list]:
    """(objects to apply, objects to delete) for `feast apply` of `repo`, as the CLI computes
    them: what the repository defines, and what the registry holds that it no longer does."""
    from feast.repo_operations import extract_objects_for_apply_delete

    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(
        store.project, store.registry, repo
    )
    return to_apply, to_delete


@contextlib.contextmanager
def type_checks_off() -> Iterator[None]:
    """Feast checks the types of its own arguments on every call (typeguard), about a sixth of
    a one-user read; a caller that builds those arguments itself can turn that off."""
    from typeguard import suppress_type_checks

    with suppress_type_checks():
        yield
