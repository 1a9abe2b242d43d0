"""Plain SQL where it pays, with Django's adaptation of values both ways.

Every parameter is bound through the model field it is compared with or stored in
(`field.get_db_prep_value`), and every result column is converted by the field it was
read from (the backend's and the field's converters, as the ORM's compiler applies them),
so the same statement gives the same Python values on PostgreSQL and SQLite: aware
datetimes, UUIDs, decoded JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Field, Model
from django.db.models.expressions import Col

M = TypeVar("M", bound=Model)
Converter = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class Value:
    """A parameter, adapted by the field it is compared with or stored in."""

    field: Field[Any, Any]
    value: Any

    def adapted(self) -> Any:
        if self.value is None:
            return None
        return self.field.get_db_prep_save(self.value, connection)


def field(model: type[Model], name: str) -> Field[Any, Any]:
    """A concrete field of `model` by name or attribute name (`tenant` or `tenant_id`)."""
    found = model._meta.get_field(name)
    if not isinstance(found, Field) or found.column is None:
        raise ValueError(f"{model.__name__}.{name} is not a column")
    return found


def param(model: type[Model], name: str, value: Any) -> Value:
    """`value` as a parameter for the column of `model.name`."""
    return Value(field(model, name), value)


class Columns:
    """The result columns of a statement, each read from one model field."""

    def __init__(self, fields: Sequence[Field[Any, Any]]) -> None:
        self.fields = tuple(fields)
        self._converters: list[tuple[Col, list[Converter]]] | None = None
        self._positions: dict[str, int] = {}
        for position, f in reversed(list(enumerate(self.fields))):
            self._positions[f.attname] = position  # the first column of that name wins

    @classmethod
    def of(cls, model: type[Model], names: Sequence[str]) -> Columns:
        return cls([field(model, name) for name in names])

    def __add__(self, other: Columns) -> Columns:
        return Columns(self.fields + other.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def position(self, attname: str) -> int:
        """Where the first column read from a field of that attribute name is."""
        return self._positions[attname]

    def names(self, alias: str = "") -> list[str]:
        """The column names, qualified by a table alias when one is given."""
        prefix = f"{alias}." if alias else ""
        return [f"{prefix}{f.column}" for f in self.fields]

    def converters(self) -> list[tuple[Col, list[Converter]]]:
        # Built on first use: the backend's converters depend on the connection's vendor.
        if self._converters is None:
            built = []
            for f in self.fields:
                col = f.get_col(f.model._meta.db_table)
                backend = connection.ops.get_db_converters(col)
                built.append((col, [*backend, *col.get_db_converters(connection)]))
            self._converters = built
        return self._converters

    def convert(self, row: Sequence[Any]) -> list[Any]:
        values = []
        for raw, (col, converters) in zip(row, self.converters(), strict=True):
            value = raw
            for converter in converters:
                value = converter(value, col, connection)
            values.append(value)
        return values


Param = Value | str | int | None


def adapt(params: Sequence[Param]) -> list[Any]:
    """Values bound to a field are adapted by it; plain text, integers and None are the same
    on every backend."""
    out = []
    for param in params:
        if isinstance(param, Value):
            out.append(param.adapted())
        elif param is None or isinstance(param, str | int):
            out.append(param)
        else:
            raise TypeError(f"bind {type(param).__name__} values to their field")
    return out


def fetch(sql: str, params: Sequence[Param], columns: Columns) -> list[list[Any]]:
    """Rows of a SELECT (or RETURNING), each value converted by its column's field."""
    with connection.cursor() as cursor:
        cursor.execute(sql, adapt(params))
        return [columns.convert(row) for row in cursor.fetchall()]


def fetch_raw(sql: str, params: Sequence[Param]) -> list[tuple[Any, ...]]:
    """Rows of a SELECT as the driver returns them, for a caller that converts a row
    (`Columns.convert`) only once it knows it wants it."""
    with connection.cursor() as cursor:
        cursor.execute(sql, adapt(params))
        return list(cursor.fetchall())


def execute(sql: str, params: Sequence[Param]) -> int:
    """Run a statement; returns the number of rows it changed."""
    with connection.cursor() as cursor:
        cursor.execute(sql, adapt(params))
        return int(cursor.rowcount)


def instance(model: type[M], columns: Columns, values: Sequence[Any]) -> M:
    """A model instance from converted values, as the ORM builds one; fields not read stay
    deferred (loaded on access), never a default in place of a stored value."""
    by_name = {f.attname: v for f, v in zip(columns.fields, values, strict=True)}
    ordered = [f.attname for f in model._meta.concrete_fields if f.attname in by_name]
    return model.from_db(connection.alias, ordered, [by_name[n] for n in ordered])
