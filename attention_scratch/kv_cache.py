"""A key/value cache for step-by-step decoding (chapter 6).

When a model generates one token at a time, the keys and values of the tokens
already seen do not change; recomputing them at every step costs O(S) work per
step for nothing. The cache keeps them, in a buffer with spare room that doubles
when full, so appending is amortised O(new tokens) and never copies the whole
history at every step. It stores ``Hkv`` heads, not ``Hq``: that is the memory
grouped-query and multi-query attention save.
"""
import numpy as np

from ._checks import array_module, check_positive_int


# BEGIN EXERCISE 6.5 (2 points): appending to a growing KV-cache buffer
# uses: from attention_scratch._checks import array_module
# writes: buffer
def append_to_buffer(buffer, length, new):
    """Write ``new`` after the first ``length`` positions of ``buffer``; grow it if full.

    ``buffer[..., :length, :]`` holds the cached entries, the rest is spare room.
    If ``length + n`` (``n = new.shape[-2]``) exceeds the capacity
    ``buffer.shape[-2]``, allocate a new buffer of capacity
    ``max(2 * capacity, length + n)`` and copy the cached entries over first.
    Return ``(buffer, length + n)``; the caller reads ``buffer[..., :length + n, :]``.
    With room left (``length + n <= capacity``) ``buffer`` itself is written and
    returned; a grown buffer keeps the dtype of ``buffer``.

    Shapes: ``buffer`` (..., capacity, D); ``new`` (..., n, D) with the same leading
    axes and D.
    """
    # BEGIN SOLUTION
    n = new.shape[-2]
    capacity = buffer.shape[-2]
    if length + n > capacity:
        xp = array_module(buffer)  # NumPy or CuPy: the buffer stays where it is
        grown = xp.empty(buffer.shape[:-2] + (max(2 * capacity, length + n), buffer.shape[-1]),
                         dtype=buffer.dtype)  # (..., new capacity, D)
        grown[..., :length, :] = buffer[..., :length, :]
        buffer = grown
    buffer[..., length:length + n, :] = new  # (..., n, D)
    return buffer, length + n
    # END SOLUTION


# END EXERCISE


class KVCache:
    """The keys and values of the positions decoded so far, for one attention layer.

    Use it with :meth:`attention_scratch.MultiHeadAttention.forward`'s ``cache=``
    argument, or directly: ``k_all, v_all = cache.append(k_new, v_new)``.

    Parameters
    ----------
    capacity : int
        Initial room (positions); the buffers double when full.

    Shapes
    ------
    keys ``(B, Hkv, S, E)``, values ``(B, Hkv, S, Ev)``; ``S`` grows with each append.
    """

    def __init__(self, capacity=16):
        self.capacity = check_positive_int(capacity, "capacity")
        self.length = 0
        self._k = self._v = None

    def append(self, k_new, v_new):
        """Add the keys and values of ``n`` new positions; return all cached ``(keys, values)``.

        Shapes: ``k_new`` (B, Hkv, n, E), ``v_new`` (B, Hkv, n, Ev) ->
        ``(B, Hkv, S + n, E)``, ``(B, Hkv, S + n, Ev)`` (views of the buffers).
        """
        xp = array_module(k_new, v_new)
        k_new, v_new = xp.asarray(k_new), xp.asarray(v_new)
        if k_new.ndim < 2 or k_new.shape[:-1] != v_new.shape[:-1]:
            raise ValueError("k_new (..., n, E) and v_new (..., n, Ev) "
                             f"must agree on all but the last axis; got shapes {k_new.shape} "
                             f"and {v_new.shape}")
        if self._k is None:
            dtype = np.result_type(k_new, v_new)
            self._k = xp.empty(k_new.shape[:-2] + (self.capacity, k_new.shape[-1]), dtype=dtype)
            self._v = xp.empty(v_new.shape[:-2] + (self.capacity, v_new.shape[-1]), dtype=dtype)
        elif k_new.shape[:-2] != self._k.shape[:-2] or k_new.shape[-1] != self._k.shape[-1] \
                or v_new.shape[-1] != self._v.shape[-1]:
            raise ValueError(f"new keys/values of shapes {k_new.shape}, "
                             f"{v_new.shape} do not match the cache's {self._k.shape[:-2]} + "
                             f"(S, {self._k.shape[-1]}) / (S, {self._v.shape[-1]})")
        self._k, _ = append_to_buffer(self._k, self.length, k_new)
        self._v, self.length = append_to_buffer(self._v, self.length, v_new)
        self.capacity = self._k.shape[-2]
        return self.keys, self.values

    @property
    def keys(self):
        """The cached keys, ``(B, Hkv, S, E)``."""
        return None if self._k is None else self._k[..., :self.length, :]

    @property
    def values(self):
        """The cached values, ``(B, Hkv, S, Ev)``."""
        return None if self._v is None else self._v[..., :self.length, :]

    @property
    def nbytes(self):
        """Bytes held by the cached keys and values (not counting the spare room)."""
        return 0 if self._k is None else self.keys.nbytes + self.values.nbytes
