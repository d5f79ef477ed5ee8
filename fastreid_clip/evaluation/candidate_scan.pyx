# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""One pass over a chunk of distances (or cosine similarities) that counts, for every positive of every query,
the negatives ranked before it. The compiled CPU counterpart of the candidate search in ``ranking.py``
(``_positive_ranks``): same candidates, same order (ascending float32 distance, ties by gallery index), but
no mask, no ``nonzero`` and no candidate arrays. Built by ``python -m fastreid_clip.utils.build_kernels``.
"""

from libc.stdint cimport int64_t


def count_negatives_before(
    const float[:, ::1] values,
    bint similarities,
    const float[::1] bound,
    const float[:, ::1] pos_dist,
    const int64_t[:, ::1] pos_index,
    const int64_t[::1] pos_count,
    const int64_t[::1] query_group,
    const int64_t[::1] gallery_group,
    int64_t[:, ::1] hist,
    Py_ssize_t row_start,
    Py_ssize_t row_stop,
):
    """Adds, for rows ``row_start:row_stop``, each candidate negative to the histogram bin of its position.

    Args:
        values: ``[C, G]`` float32 distances, or cosine similarities ``s`` of the distances ``1 - s``.
        similarities: ``values`` holds similarities.
        bound: ``[C]``; candidates are entries ``<= bound`` (distances) or ``>= bound`` (similarities).
        pos_dist: ``[C, P]`` float32 distances of each row's positives, sorted with ``pos_index`` by
            ``(distance, gallery index)``; only the first ``pos_count`` entries of a row are read.
        pos_index: ``[C, P]`` gallery indices of those positives.
        pos_count: ``[C]`` number of positives per row.
        query_group: ``[C]`` identity group of each query (``-1``: none in the gallery).
        gallery_group: ``[G]`` identity group of each gallery item; items of the query's group never count.
        hist: ``[C, P + 1]`` int64, incremented: ``hist[r, k]`` counts the candidates of row ``r`` that rank
            after exactly ``k`` of its positives.
        row_start: first row to scan.
        row_stop: one past the last row to scan.
    """
    cdef Py_ssize_t size = values.shape[1]
    cdef Py_ssize_t r
    with nogil:
        for r in range(row_start, row_stop):
            if pos_count[r]:
                _count_row(&values[r, 0], size, similarities, bound[r], pos_count[r], query_group[r],
                           &pos_dist[r, 0], &pos_index[r, 0], &gallery_group[0], &hist[r, 0])


cdef inline void _count_row(
    const float* row, Py_ssize_t size, bint similarities, float limit, int64_t count, int64_t group,
    const float* pos_dist, const int64_t* pos_index, const int64_t* gallery_group, int64_t* hist,
) noexcept nogil:
    """Counts the candidates of one row into its ``hist`` row (see ``count_negatives_before``)."""
    cdef Py_ssize_t g
    cdef int64_t low, high, mid
    cdef float value, dist, other
    for g in range(size):
        value = row[g]
        if similarities:
            if not value >= limit:
                continue
            dist = <float>1.0 - value  # float32 arithmetic: FastReID's 1 - cos
        else:
            if not value <= limit:
                continue
            dist = value
        if gallery_group[g] == group:
            continue
        low = 0
        high = count
        while low < high:  # positives before (dist, g)
            mid = (low + high) >> 1
            other = pos_dist[mid]
            if other < dist or (other == dist and pos_index[mid] < g):
                low = mid + 1
            else:
                high = mid
        hist[low] += 1
