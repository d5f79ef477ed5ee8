"""Tolerances for comparing floating-point results of different kernels.

Two float computations give the same bits only when they run the same operations in the same order: the same
function on the same data, on the same machine, with the same library paths. Results of *different* kernels
(another GEMM shape or gallery blocking, another CPU's BLAS or ATen vector path, another thread count, fused
vs unfused attention, our code vs FastReID's or open_clip's computation of the same quantity) agree only to
within rounding, which is a number of float32 ulps of the *magnitude of what was summed*, not of the result.
The tests therefore compare them with :func:`assert_close_ulps`; exact equality is kept for the same
computation on the same data (resume determinism, a function called twice, integer outputs).

One float32 ulp of ``m`` is ``np.spacing(np.float32(m))``: ``2**-23`` at 1.0, ``3.8e-6`` at 32.
"""

from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23, one float32 ulp of 1.0


def as_float64(values) -> np.ndarray:
    """An array, tensor (detached, on the CPU) or number as a float64 array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def ulp(magnitude, dtype=np.float32) -> np.ndarray:
    """One ulp (``np.spacing``) of ``|magnitude|`` in ``dtype``, elementwise, as float64."""
    return np.spacing(np.abs(as_float64(magnitude).astype(dtype))).astype(np.float64)


def dot_ulps(depth: int) -> int:
    """Ulps of ``M >= sum_i |a_i b_i|`` within which two float32 kernels' dot products of ``depth`` terms agree.

    Each of them is within ``gamma_depth * M ~= depth * eps/2 * M`` of the exact value, whatever its summation
    order, blocking or use of FMA (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1), so the two
    are within ``depth * eps * M <= 2 * depth`` ulps of ``M``. Doubled again for the few roundings around the
    product (the norms and sums of a Euclidean distance, ``1 - s``, a scaled ``addmm``). Measured differences
    between MKL paths, ATen vector paths and thread counts are a few ulps; a product in a lower precision
    (TF32: inputs rounded to 2**-11, bfloat16 to 2**-8) is off by thousands of ulps, so it is still caught.
    """
    return 4 * depth


def mean_ulps(count: int) -> float:
    """Worst-case rounding, in ulps of 1.0, of a running mean of ``count`` values in ``[0, 1]``.

    The ``k``-th partial sum is at most ``k`` and rounds by at most ``k * eps / 2``; the sum is off by at most
    ``eps * count * (count + 1) / 4``, the mean by ``(count + 1) / 4`` ulps of 1.0, plus half an ulp for the
    division. This is how FastReID's Cython ranker forms a query's AP (a mean of precisions over its
    positives, in float32) and its CUHK03 mAP and CMC (means over queries and draws).
    """
    return (count + 1) / 4 + 0.5


def assert_close_ulps(actual, desired, ulps: float, magnitude=None, dtype=np.float32, err_msg: str = "") -> None:
    """Asserts ``|actual - desired| <= ulps * ulp(magnitude)`` elementwise (shapes equal, NaNs at the same places).

    Args:
        actual: array, tensor or number.
        desired: array-like of the same shape.
        ulps: allowed difference, in ulps of ``magnitude``.
        magnitude: scale of the quantities combined into each element (scalar or broadcastable array); by
            default ``max |desired|``. For a dot product pass the sum of the magnitudes of its terms (e.g.
            ``|q|^2 + |g|^2`` for a squared Euclidean distance, 1 for the cosine of unit vectors), not the
            result, which may be much smaller after cancellation.
        dtype: the precision the ulps are counted in.
        err_msg: prefix of the failure message.
    """
    desired = as_float64(desired)
    if magnitude is None:
        magnitude = np.abs(desired[~np.isnan(desired)]).max(initial=0.0)
    assert_within(actual, desired, ulps * ulp(magnitude, dtype), err_msg)


def assert_within(actual, desired, tolerance, err_msg: str = "") -> None:
    """Asserts ``|actual - desired| <= tolerance`` elementwise (shapes equal, NaNs at the same places).

    ``tolerance`` (scalar or broadcastable array) is built by the caller from ulps of magnitudes, e.g. a sum
    of the tolerances of the terms of a weighted sum.
    """
    actual, desired = as_float64(actual), as_float64(desired)
    assert actual.shape == desired.shape, f"{err_msg} shape {actual.shape} != {desired.shape}"
    nan = np.isnan(desired)
    assert np.array_equal(np.isnan(actual), nan), f"{err_msg} NaNs at different places"
    tolerance = np.broadcast_to(as_float64(tolerance), desired.shape)
    diff = np.where(nan, 0.0, np.abs(actual - desired))
    bad = diff > tolerance
    if bad.any():
        ratio = diff / np.maximum(tolerance, np.finfo(np.float64).tiny)
        worst = np.unravel_index(np.argmax(np.where(bad, ratio, -1.0)), diff.shape)
        raise AssertionError(
            f"{err_msg} {int(bad.sum())} of {bad.size} elements differ by more than their tolerance; worst at "
            f"{tuple(int(i) for i in worst)}: {actual[worst]!r} vs {desired[worst]!r}, difference "
            f"{diff[worst]:.3g} = {ratio[worst]:.3g} x the tolerance {tolerance[worst]:.3g}"
        )
