"""What an Arrow ``properties`` struct costs once written as JSON, known before writing it.

Arrow data can be far smaller than what it stands for: a null-typed child has no buffers at
all, so a list of a hundred million nulls fits in a few hundred bytes and expands to half a
gigabyte of ``null,null,...``; an empty struct is the same. Sizes are therefore computed
from lengths and offsets, never from buffer sizes, and from the type tree rather than per
value, so the cost of knowing is proportional to the schema and the string and integer
buffers (which the body limit already bounds), not to what the data expands to.

The figure is an upper bound of the JSON text Polars writes for the column (exact for
structs, lists, nulls, booleans, strings and integers up to rounding; 24 bytes for any float;
children of null values counted as if present).
"""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa

MAX_FIELDS = 10_000  # struct fields in one properties type, at every depth

_FLOAT_CHARS = 24  # the longest shortest-round-trip double, e.g. -2.2250738585072014e-308


class UnsupportedType(TypeError):
    """A type this module does not measure (the caller refuses the schema)."""


def count_fields(t: pa.DataType) -> int:
    """Struct fields and list levels in a type, at every depth."""
    if pa.types.is_struct(t):
        inner = sum(count_fields(t.field(i).type) for i in range(t.num_fields))
        return int(t.num_fields) + inner
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return 1 + count_fields(t.value_type)
    return 0


def json_bytes(array: pa.Array) -> int:
    """An upper bound of the JSON text of every value of ``array`` (types as accepted for
    ``properties``: structs, lists, null, bool, integers, floats, strings)."""
    n: int = len(array)
    if n == 0:
        return 0
    t = array.type
    if pa.types.is_null(t):
        return 4 * n
    if pa.types.is_boolean(t):
        return 5 * n
    if pa.types.is_integer(t):
        return _integer_chars(array)
    if pa.types.is_floating(t):
        return _FLOAT_CHARS * n
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _string_chars(array)
    if pa.types.is_struct(t):
        fields: int = t.num_fields
        keys = sum(len(orjson.dumps(t.field(i).name)) + 1 for i in range(fields))
        # "{" + "}" + keys with colons + commas between members, for every row ("null" for
        # a null one is at most two more).
        total = n * (2 + keys + max(0, fields - 1)) + 2 * int(array.null_count)
        return total + sum(json_bytes(array.field(i)) for i in range(fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        offsets = array.offsets
        first: int = offsets[0].as_py()
        children: int = offsets[n].as_py() - first
        # "[" + "]" (or "null") per row and at most one comma per element.
        nulls = 2 * int(array.null_count)
        return 2 * n + nulls + children + json_bytes(array.values.slice(first, children))
    if pa.types.is_fixed_size_list(t):
        size: int = t.list_size
        child = array.values.slice(array.offset * size, n * size)
        return 4 * n + n * size + json_bytes(child)
    raise UnsupportedType(f"cannot measure {t}")


def _integer_chars(array: pa.Array) -> int:
    """Digits (and minus signs) of every integer; 4 for a null."""
    width = array.type.bit_width // 8
    dtype = np.dtype(f"{'i' if pa.types.is_signed_integer(array.type) else 'u'}{width}")
    values = np.frombuffer(
        array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * width
    )
    magnitude = np.abs(values.astype(np.float64))
    # log10 is exact enough: a digit too many at a power of ten only overestimates.
    digits = np.floor(np.log10(np.maximum(magnitude, 1.0))).astype(np.int64) + 1
    total = int(digits.sum()) + int(np.count_nonzero(values < 0))
    return total + 4 * int(array.null_count)


def _string_chars(array: pa.Array) -> int:
    """Quotes, bytes and escapes of every string (a control character may take six)."""
    n: int = len(array)
    buffers = array.buffers()
    width = 8 if pa.types.is_large_string(array.type) else 4
    ends = np.frombuffer(buffers[1], dtype=f"i{width}", count=n + 1, offset=array.offset * width)
    first, last = int(ends[0]), int(ends[-1])
    data = buffers[2]
    nulls = 2 * int(array.null_count)  # "null" instead of ""
    if data is None or last == first:
        return 2 * n + nulls
    view = np.frombuffer(data, dtype=np.uint8, count=last - first, offset=first)
    controls = int(np.count_nonzero(view < 0x20))
    escaped = int(np.count_nonzero((view == 0x22) | (view == 0x5C)))
    return 2 * n + nulls + (last - first) + 5 * controls + escaped
