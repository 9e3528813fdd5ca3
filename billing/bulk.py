"""Set-based writes for batch jobs, where the ORM's per-object machinery is the bottleneck."""

from collections.abc import Sequence

from django.db import connection, models


def bulk_update_rows(objs: Sequence[models.Model], fields: Sequence[str]) -> int:
    """Write ``fields`` of each object to its row in one statement, whatever the count.

    ``QuerySet.bulk_update`` builds a ``CASE WHEN id = … THEN …`` per object and field, which
    costs milliseconds of Python per object; this sends one array per field instead:
    ``UPDATE t SET f = v.f FROM unnest(ids, fs…) AS v(id, f…) WHERE t.id = v.id``.
    Like ``bulk_update``, it neither calls ``save()`` nor sets ``auto_now`` fields.
    """
    if not objs:
        return 0
    model = type(objs[0])
    if connection.vendor != "postgresql":
        return model._base_manager.bulk_update(objs, fields)
    meta = model._meta
    pk = meta.pk
    columns = [meta.get_field(name) for name in fields]
    arrays = [[pk.get_db_prep_value(obj.pk, connection) for obj in objs]]
    casts = [f"%s::{pk.rel_db_type(connection)}[]"]
    for field in columns:
        arrays.append(
            [field.get_db_prep_save(getattr(obj, field.attname), connection) for obj in objs]
        )
        casts.append(f"%s::{field.db_type(connection)}[]")
    quote = connection.ops.quote_name
    names = ["id", *(f"v{n}" for n in range(len(columns)))]
    assignments = ", ".join(
        f"{quote(field.column)} = v.{name}" for field, name in zip(columns, names[1:], strict=True)
    )
    # Only the model's own table, column and type names are interpolated; values are parameters.
    sql = (
        f"UPDATE {quote(meta.db_table)} AS t SET {assignments} "  # noqa: S608
        f"FROM unnest({', '.join(casts)}) AS v({', '.join(names)}) "
        f"WHERE t.{quote(pk.column)} = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, arrays)
        return cursor.rowcount
