"""Hostile values shared by test_hostile_inputs.py and test_fuzz.py: the same
numbers in awkward memory, things that are not float arrays, and
hyper-parameters of every wrong kind."""

from __future__ import annotations

import numbers

import numpy as np


class Subclass(np.ndarray):
    """An ndarray subclass that adds nothing: it must behave as its data."""


class ArrayRaises:
    """Refuses to become an array."""

    def __array__(self, *args, **kwargs):
        raise RuntimeError("__array__ refused")


class ArrayReturnsList:
    """__array__ that breaks its contract by returning a list."""

    def __array__(self, *args, **kwargs):
        return [1.0, 2.0]


class FloatRaises:
    """A number that refuses to be a float or an int."""

    def __float__(self):
        raise RuntimeError("__float__ refused")

    def __index__(self):
        raise RuntimeError("__index__ refused")

    def __int__(self):
        raise RuntimeError("__int__ refused")


class IntIndexRaises(int):
    """An int subclass whose __index__ and __int__ raise: still an int."""

    def __index__(self):
        raise RuntimeError("__index__ refused")

    def __int__(self):
        raise RuntimeError("__int__ refused")


class IntegralIndexRaises:
    """Claims to be a numbers.Integral, but __index__ raises."""

    def __index__(self):
        raise RuntimeError("__index__ refused")


numbers.Integral.register(IntegralIndexRaises)


class ReprRaises:
    """Breaks any error message that shows it with repr()."""

    def __repr__(self):
        raise RuntimeError("__repr__ refused")


class SequenceRaises:
    """Looks like a sequence, fails when read."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        raise RuntimeError("__getitem__ refused")


def unaligned(a: np.ndarray) -> np.ndarray:
    """A copy of `a` in a bytes buffer at offset 1: contiguous but unaligned."""
    buf = bytearray(a.nbytes + 1)
    out = np.ndarray(a.shape, dtype=a.dtype, buffer=buf, offset=1)
    out[...] = a
    assert not out.flags.aligned or a.size == 0 or a.dtype.itemsize == 1
    return out


def read_only(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    out.flags.writeable = False
    return out


def negative_strides(a: np.ndarray) -> np.ndarray:
    """The values of `a`, seen through strides that are all negative."""
    flip = (slice(None, None, -1),) * a.ndim
    return np.ascontiguousarray(a[flip])[flip]


def strided(a: np.ndarray) -> np.ndarray:
    """The values of `a`, every other element of a larger buffer along each axis."""
    big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
    view = big[(slice(None, None, 2),) * a.ndim]
    view[...] = a
    return view


def frombuffer_read_only(a: np.ndarray) -> np.ndarray:
    """np.frombuffer over bytes at offset 1: unaligned and read-only at once."""
    raw = b"\0" + np.ascontiguousarray(a).tobytes()
    return np.frombuffer(raw, dtype=a.dtype, offset=1).reshape(a.shape)


# Same values, awkward memory: each must give the same answer as a plain copy.
LAYOUTS = {
    "fortran": np.asfortranarray,
    "negative-strides": negative_strides,
    "strided-view": strided,
    "read-only": read_only,
    "unaligned": unaligned,
    "frombuffer-unaligned-read-only": frombuffer_read_only,
    "big-endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "subclass": lambda a: a.view(Subclass),
    "masked-nothing-masked": lambda a: np.ma.masked_array(a, mask=np.zeros(a.shape, bool)),
    "list": lambda a: a.tolist(),
}

# Not floating-point data: each must raise TypeError.
NOT_FLOAT = {
    "bool": lambda a: a > 0,
    "int8": lambda a: a.astype(np.int8),
    "int64": lambda a: a.astype(np.int64),
    "uint8": lambda a: a.astype(np.uint8),
    "complex64": lambda a: a.astype(np.complex64),
    "complex128": lambda a: a.astype(np.complex128),
    "object-of-floats": lambda a: a.astype(object),
    "str": lambda a: a.astype(str),
    "bytes": lambda a: a.astype("S8"),
    "datetime64": lambda a: np.zeros(a.shape, "datetime64[s]"),
    "timedelta64": lambda a: np.zeros(a.shape, "timedelta64[s]"),
    "structured": lambda a: np.zeros(a.shape, [("re", "f8"), ("im", "f8")]),
    "list-of-ints": lambda a: a.astype(int).tolist(),
    "None": lambda a: None,
    "string": lambda a: "not an array",
    "object": lambda a: object(),
    "dict": lambda a: {"x": 1.0},
    "ragged-list": lambda a: [[[[1.0, 2.0]], [[1.0]]]],
    "array-raises": lambda a: ArrayRaises(),
    "array-returns-list": lambda a: ArrayReturnsList(),
    "float-raises-in-list": lambda a: [[[[FloatRaises()]]]],
    "sequence-raises": lambda a: SequenceRaises(),
}

# Integer hyper-parameters (stride, dilation, groups, kernel_size, filters,
# padding amounts) that are not integers: TypeError.
NOT_INT = [
    True,
    False,
    np.True_,
    1.0,
    2.0,
    float("nan"),
    float("inf"),
    "2",
    b"2",
    None,
    object(),
    FloatRaises(),
    IntegralIndexRaises(),
    ReprRaises(),
    np.float64(2.0),
    2 + 0j,
    np.array(2),
    np.array([2]),
]
# Integers out of range: ValueError (0 is fine for padding only).
OUT_OF_RANGE = [0, -1, -(2**70), 2**31, 2**63, 2**70, np.int64(-3), np.uint64(2**63)]
# Integers of other types that mean a valid value: accepted as that value.
INT_LIKE = [np.int64(2), np.int32(2), np.uint8(2), np.int16(2), IntIndexRaises(2)]
