"""Set-based writes for batch jobs, where the ORM's per-object machinery is the bottleneck.

Both helpers send a batch's rows as one JSON document that PostgreSQL expands against the
table's own row type (``json_populate_recordset``): ``json.dumps`` is C, while the ORM prepares
every value of every object in Python and psycopg writes client-side array literals in Python,
element by element. Values are the objects' attributes as the ORM would send them (a decimal
or a timestamp as its text, which PostgreSQL reads with the column's own type and rounding).
"""

import datetime
import json
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from django.db import connection, models
from django.utils import timezone


def _json_value(value: Any) -> Any:
    """``json.dumps``'s fallback for the non-JSON values model fields hold."""
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} has no JSON form for a bulk write")


def _dumps(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_json_value, separators=(",", ":"))


def _column_reader(field: models.Field) -> Callable[[models.Model], Any]:
    """How to read one concrete field's value off an object, as the ORM would save it."""
    attname = field.attname
    if isinstance(field, models.ForeignKey):
        name = field.name

        def read_foreign_key(obj: models.Model) -> Any:
            value = obj.__dict__.get(attname)
            if value is None:
                # Assigned before the related row was saved (``line.invoice = invoice``): its
                # pk now, as ``Model._prepare_related_fields_for_save`` does.
                related = obj._state.fields_cache.get(name)
                if related is not None:
                    if related.pk is None:
                        raise ValueError(f"{name} of {obj!r} is not saved")
                    value = related.pk
                    setattr(obj, attname, value)
            return value

        return read_foreign_key
    # Values JSON has no type for are sent as the text PostgreSQL reads them from, made here:
    # through ``json.dumps``'s ``default`` each one costs several times more.
    if isinstance(field, models.DecimalField | models.UUIDField):

        def read_as_text(obj: models.Model) -> Any:
            value = obj.__dict__.get(attname)
            return None if value is None else str(value)

        return read_as_text
    if isinstance(field, models.DateField | models.TimeField):  # DateTimeField too

        def read_as_iso(obj: models.Model) -> Any:
            value = obj.__dict__.get(attname)
            return value if value is None or type(value) is str else value.isoformat()

        return read_as_iso
    return lambda obj: obj.__dict__.get(attname)


def bulk_insert(
    objs: Sequence[models.Model], *, ignore_conflicts: bool = False, match: str | None = None
) -> list[models.Model]:
    """``QuerySet.bulk_create`` for a batch job's new rows, in one statement: sets each object's
    pk and its ``auto_now``/``auto_now_add`` timestamps (one ``now`` for the batch) and returns
    the objects. With ``ignore_conflicts`` a row that conflicts is skipped (``ON CONFLICT DO
    NOTHING``) and only the objects inserted are returned, told apart by their unique ``match``
    field. Model ``save()`` is not called and no signal is sent, as with ``bulk_create``."""
    objs = list(objs)
    if not objs:
        return []
    model = type(objs[0])
    if connection.vendor != "postgresql":
        created = model._base_manager.bulk_create(objs, ignore_conflicts=ignore_conflicts)
        return [o for o in created if o.pk is not None] if ignore_conflicts else created
    meta = model._meta
    pk = meta.pk
    now = timezone.now()
    stamped = [
        f.attname
        for f in meta.concrete_fields
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
    ]
    for obj in objs:
        for attname in stamped:
            setattr(obj, attname, now)
    fields = [f for f in meta.concrete_fields if not (f.primary_key and f.attname == "id")]
    readers = [(f.column, _column_reader(f)) for f in fields]
    rows = [{column: read(obj) for column, read in readers} for obj in objs]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    columns = ", ".join(quote(f.column) for f in fields)
    values = ", ".join(f"r.{quote(f.column)}" for f in fields)
    returning = quote(pk.column)
    if match is not None:
        returning += ", " + quote(meta.get_field(match).column)
    # Only the model's own table and column names are interpolated; the rows are a parameter.
    sql = (
        f"INSERT INTO {table} ({columns}) SELECT {values} "  # noqa: S608
        f"FROM json_populate_recordset(NULL::{table}, %s::json) AS r "
        + ("ON CONFLICT DO NOTHING " if ignore_conflicts else "")
        + f"RETURNING {returning}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_dumps(rows)])
        returned = cursor.fetchall()
    if ignore_conflicts:
        if match is None:
            raise ValueError("bulk_insert(ignore_conflicts=True) needs a unique match field")
        by_key = {getattr(obj, match): obj for obj in objs}
        inserted = []
        for pk_value, key in returned:
            obj = by_key[key]
            obj.pk = pk_value
            inserted.append(obj)
    else:
        # RETURNING gives the rows in the order of the document, as Django's own bulk_create
        # relies on for its INSERT … SELECT FROM unnest(…).
        if len(returned) != len(objs):
            raise AssertionError("bulk_insert: not every row was inserted")
        inserted = objs
        for obj, (pk_value,) in zip(objs, returned, strict=True):
            obj.pk = pk_value
    for obj in inserted:
        obj._state.adding = False
        obj._state.db = "default"
    return inserted


def bulk_update_rows(objs: Sequence[models.Model], fields: Sequence[str]) -> int:
    """Write ``fields`` of each object to its row in one statement, whatever the count.

    ``QuerySet.bulk_update`` builds a ``CASE WHEN id = … THEN …`` per object and field, which
    costs milliseconds of Python per object; this sends the rows as one JSON document instead:
    ``UPDATE … FROM json_populate_recordset(…)``. Like ``bulk_update``, it neither calls
    ``save()`` nor sets ``auto_now`` fields.
    """
    if not objs:
        return 0
    model = type(objs[0])
    if connection.vendor != "postgresql":
        return model._base_manager.bulk_update(objs, fields)
    meta = model._meta
    pk = meta.pk
    columns = [meta.get_field(name) for name in fields]
    readers = [(f.column, _column_reader(f)) for f in [pk, *columns]]
    rows = [{column: read(obj) for column, read in readers} for obj in objs]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    assignments = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in columns)
    # Only the model's own table and column names are interpolated; the rows are a parameter.
    sql = (
        f"UPDATE {table} AS t SET {assignments} "  # noqa: S608
        f"FROM json_populate_recordset(NULL::{table}, %s::json) AS v "
        f"WHERE t.{quote(pk.column)} = v.{quote(pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_dumps(rows)])
        return cursor.rowcount
