"""Reading a corpus back for comparisons in tests (by content, ignoring timings)."""

from __future__ import annotations

from pathlib import Path

from engine.query import connect
from engine.schemas import ROW_ID, TABLES


def table_rows(corpus: str | Path, table: str, round_to: int = 2) -> list[tuple]:
    """Every row of a table in the committed iterations, floats rounded, sorted by row id."""
    connection = connect(corpus)
    columns = []
    for field in TABLES[table]:
        name = field.name
        if str(field.type) == "float":
            columns.append(f"round({name}, {round_to}) AS {name}")
        elif str(field.type) == "list<item: float>":
            columns.append(f"list_transform({name}, lambda v: round(v, {round_to})) AS {name}")
        else:
            columns.append(name)
    query = f"SELECT {', '.join(columns)} FROM {table} ORDER BY {ROW_ID[table]}, iteration"
    return connection.sql(query).fetchall()


def all_rows(corpus: str | Path) -> dict[str, list[tuple]]:
    return {table: table_rows(corpus, table) for table in TABLES}


def kept_regions(corpus: str | Path, file_name: str) -> list[dict]:
    connection = connect(corpus)
    cursor = connection.execute(
        "SELECT r.* FROM regions r JOIN images i USING (image_id) "
        "WHERE r.kept AND i.uri LIKE '%/' || ? ORDER BY r.score DESC",
        [file_name],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
