"""Writing many rows in few statements, where the ORM's own way is too slow for the engine."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connections, models, router


def rows_update(objs: Sequence[models.Model], fields: Sequence[str]) -> int:
    """Save `fields` of each object with one prepared UPDATE executed for all of them.

    Django's `bulk_update` builds a CASE expression per field over the whole batch, which costs
    more to compile than the database takes to run it; one statement sent with `executemany`
    (pipelined by psycopg, a prepared loop in SQLite) does the same work in a fraction of the
    time. Values go through each field's own preparation, so JSON, decimals and dates are
    stored exactly as `save()` would store them. Returns the number of objects written."""
    if not objs:
        return 0
    model = type(objs[0])
    meta = model._meta
    concrete = [meta.get_field(name) for name in fields]
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in concrete)
    # Identifiers come from the model's own columns, values go as parameters.
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    sql = f"UPDATE {table} SET {assignments} WHERE {pk} = %s"  # noqa: S608
    params = [
        [
            *(
                field.get_db_prep_save(getattr(obj, field.attname), connection)
                for field in concrete
            ),
            obj.pk,
        ]
        for obj in objs
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
    return len(objs)
