"""pandas batches ↔ plain Python rows, for the functions `mapInPandas` runs in executors.

Arrow hands a `mapInPandas` function numpy arrays for array columns and NaN for null floats;
the pure row functions of `udfs` want lists and None. Going back, a column of Python values must
keep its Spark type: nullable integers as pandas `Int32`, doubles as `Float64`, everything else as
object (a column that is null in every row must stay object, not become float NaN).
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
from pyspark.sql.types import DoubleType, IntegerType, StructType


def to_python(value: Any) -> Any:
    """One pandas/Arrow cell as plain Python: arrays → lists, NaN → None, the rest unchanged."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


def python_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """A row of `DataFrame.to_dict("records")` with every cell through `to_python`."""
    return {name: to_python(value) for name, value in record.items()}


def pandas_frame(rows: list[dict], schema: StructType) -> pd.DataFrame:
    """Row dicts → a pandas frame with exactly `schema`'s columns, in dtypes Arrow converts to
    `schema` (keys a row lacks are null)."""
    data = {}
    for f in schema.fields:
        values = [r.get(f.name) for r in rows]
        if isinstance(f.dataType, IntegerType):
            data[f.name] = pd.array(values, dtype="Int32")
        elif isinstance(f.dataType, DoubleType):
            data[f.name] = pd.array(values, dtype="Float64")
        else:
            data[f.name] = pd.Series(values, dtype="object")
    return pd.DataFrame(data, index=range(len(rows)))
