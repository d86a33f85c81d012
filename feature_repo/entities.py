"""The one entity: a subscriber, keyed by user_id (like `7590-VHVEG`)."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A StreamFlow subscriber.",
)
