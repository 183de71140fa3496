"""Multi-head attention: heads, self and cross attention, GQA/MQA, a KV cache (chapter 6).

The layer of Vaswani et al. (2017): project the inputs to ``Hq`` query heads and
``Hkv`` key/value heads, run scaled dot-product attention in every head at once,
concatenate the heads and project back. ``Hkv = Hq`` is classic multi-head
attention, ``Hkv = 1`` multi-query attention (Shazeer, 2019), anything between
grouped-query attention (Ainslie et al., 2023). Parameters follow ``y = x @ W + b``
(``W`` is (in, out), the transpose of PyTorch's ``nn.Linear.weight``).
"""
import numpy as np

from ._checks import as_float_array, check_broadcastable, check_flag, check_positive_int
from ._nonfinite import bad_rows, zero_rows
from .flash import flash_attention, flash_attention_backward
from .flex import flex_attention, flex_attention_backward
from .kv_cache import KVCache
from .masks import check_attn_mask, combine_masks, key_padding_to_keep
from .positional import apply_rope, apply_rope_backward
from .sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward


# BEGIN EXERCISE 6.1 (1 point): splitting the model dimension into heads
def split_heads(x, num_heads):
    """``(B, L, H·D) -> (B, H, L, D)``: head ``h`` owns features ``h·D .. h·D + D - 1``.

    Shapes: ``x`` (..., L, H·D) with any number of leading axes (also none),
    ``L`` possibly 0; returns (..., H, L, D) with the dtype of ``x``.
    """
    # BEGIN SOLUTION
    *lead, L, width = x.shape
    x = x.reshape(tuple(lead) + (L, num_heads, width // num_heads))  # (..., L, H, D)
    return np.swapaxes(x, -2, -3)  # (..., H, L, D)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 6.2 (1 point): merging the heads back
def merge_heads(x):
    """``(B, H, L, D) -> (B, L, H·D)``, the inverse of :func:`split_heads`.

    Shapes: ``x`` (..., H, L, D) with any number of leading axes (also none),
    ``L`` possibly 0; returns (..., L, H·D) with the dtype of ``x``.
    """
    # BEGIN SOLUTION
    x = np.swapaxes(x, -2, -3)  # (..., L, H, D)
    return x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],))  # (..., L, H·D)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 6.3 (2 points): grouped-query attention by repeating key/value heads
def repeat_kv(x, num_q_heads):
    """Repeat each of the ``Hkv`` key/value heads ``G = Hq / Hkv`` times along the head axis.

    Query head ``h`` must read key/value head ``h // G``: heads come out in the
    order ``0, 0, ..., 1, 1, ...`` (each repeated ``G`` times in a row), not
    ``0, 1, ..., 0, 1, ...``. Then ordinary multi-head attention applies.

    Shapes: ``x`` (..., Hkv, S, D) with any number of leading axes (also none);
    returns (..., Hq, S, D) with the dtype of ``x``.
    """
    # BEGIN SOLUTION
    return np.repeat(x, num_q_heads // x.shape[-3], axis=-3)  # (..., Hq, S, D)
    # END SOLUTION


# END EXERCISE


# BEGIN EXERCISE 6.4 (2 points): the gradient of the repeated key/value heads
def fold_kv_grad(grad, num_kv_heads):
    """The backward pass of :func:`repeat_kv`: sum the gradients of each group's copies.

    A key/value head used by ``G`` query heads receives the sum of the ``G``
    gradients that flow back to its copies.

    Shapes: ``grad`` (..., Hq, S, D) with any number of leading axes (also none);
    returns (..., Hkv, S, D) with the dtype of ``grad``.
    """
    # BEGIN SOLUTION
    *lead, hq, S, D = grad.shape
    grouped = grad.reshape(tuple(lead) + (num_kv_heads, hq // num_kv_heads, S,
                                          D))  # (..., Hkv, G, S, D)
    return grouped.sum(axis=-3)  # (..., Hkv, S, D)
    # END SOLUTION


# END EXERCISE


def _init(rng, fan_in, fan_out, shape):
    """Glorot/Xavier uniform, ``U(-b, b)`` with ``b = sqrt(6 / (fan_in + fan_out))``,
    for every projection.

    ``nn.MultiheadAttention`` differs slightly: it applies Xavier to the stacked
    ``(3·embed_dim, embed_dim)`` ``in_proj_weight`` (a smaller bound) and leaves
    ``out_proj`` at ``nn.Linear``'s default. Only the starting point differs; the
    tests copy weights across.
    """
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def _private_copies(query, key, value):
    """Copies of the three inputs for backward,
    sharing one copy where the caller passed one array."""
    copies = {}
    for a in (query, key, value):
        if id(a) not in copies:
            copies[id(a)] = a.copy()  # (B, length, width)
    return tuple(copies[id(a)] for a in (query, key, value))


def _absent_tokens(x, d_proj):
    """``x`` (B, n, in) with the tokens that hold NaN or ±inf and receive no gradient zeroed.

    Such a token is hidden from every query (padding, or a key outside every causal window):
    docs/design.md §3 keeps it out of the parameter gradients too (``0 · NaN`` would be NaN).
    """
    rows = bad_rows(x)  # (B, n)
    if not rows.any():
        return x
    return zero_rows(x, rows & ~(d_proj != 0).any(axis=-1))  # (B, n, in)


class MultiHeadAttention:
    """Multi-head attention with grouped-query heads and a backward pass.

    Parameters
    ----------
    embed_dim : int
        Model width ``d_model``; the query and output width.
    num_heads : int
        Query heads ``Hq``; must divide ``embed_dim`` (head dim ``D = embed_dim / Hq``).
    num_kv_heads : int, optional
        Key/value heads ``Hkv`` (default ``Hq``); must divide ``Hq``. 1 is multi-query attention.
    bias : bool
        Add the biases ``b_q b_k b_v b_o`` (initialised to 0, as PyTorch does).
    kdim, vdim : int, optional
        Widths of the key and value inputs for cross-attention (default ``embed_dim``).
    rng : numpy.random.Generator, optional
        Draws the initial weights (default: an unseeded generator).
    rope : bool
        Rotate the query and key heads by their positions (RoPE, chapter 7) before
        attending; with a cache the new tokens take positions ``cache.length ...``.
    attention : str
        ``"dense"`` (scaled dot-product attention, chapter 4; the default) or ``"flash"``: the
        tiled kernels, :func:`attention_scratch.flash_attention` for ``is_causal`` and
        :func:`attention_scratch.flex_attention` for a ``block_mask`` (chapter 16), forward and
        backward. The weights are never formed there, so ``need_weights`` is refused, and
        ``attn_mask`` and ``key_padding_mask`` are replaced by ``block_mask``. Decoding with a
        cache always runs dense.
    backend : str
        The kernels' backend with ``attention="flash"``: ``"numpy"``, ``"numba"`` or ``"auto"``.

    Attributes
    ----------
    params : dict
        ``W_q`` (embed_dim, embed_dim), ``W_k`` (kdim, Hkv·D), ``W_v`` (vdim, Hkv·D),
        ``W_o`` (embed_dim, embed_dim) and, with ``bias``, ``b_q``, ``b_k``, ``b_v``, ``b_o``;
        also reachable as attributes (``mha.W_q``).
    grads : dict
        The same keys, filled (overwritten) by :meth:`backward`.
    """

    def __init__(self, embed_dim, num_heads, num_kv_heads=None, bias=True, kdim=None, vdim=None,
                 rng=None, *, rope=False, attention="dense", backend="numpy"):
        embed_dim = check_positive_int(embed_dim, "embed_dim")
        num_heads = check_positive_int(num_heads, "num_heads")
        num_kv_heads = num_heads if num_kv_heads is None else check_positive_int(num_kv_heads,
                                                                                 "num_kv_heads")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not a multiple of "
                             f"num_kv_heads={num_kv_heads}")
        kdim = embed_dim if kdim is None else check_positive_int(kdim, "kdim")
        vdim = embed_dim if vdim is None else check_positive_int(vdim, "vdim")
        rng = np.random.default_rng() if rng is None else rng
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.kdim, self.vdim, self.head_dim = kdim, vdim, embed_dim // num_heads
        kv_width = num_kv_heads * self.head_dim
        self.params = {"W_q": _init(rng, embed_dim, embed_dim, (embed_dim, embed_dim)),
                       "W_k": _init(rng, kdim, kv_width, (kdim, kv_width)),
                       "W_v": _init(rng, vdim, kv_width, (vdim, kv_width)),
                       "W_o": _init(rng, embed_dim, embed_dim, (embed_dim, embed_dim))}
        if bias:
            self.params.update(b_q=np.zeros(embed_dim), b_k=np.zeros(kv_width),
                               b_v=np.zeros(kv_width), b_o=np.zeros(embed_dim))
        if rope and self.head_dim % 2:
            raise ValueError(f"rope=True needs an even head dim; got {self.head_dim}")
        self.rope = bool(rope)
        if attention not in ("dense", "flash"):
            raise ValueError(f"attention must be 'dense' or 'flash'; got {attention!r}")
        self.attention, self.backend = attention, backend
        self.grads = {}
        self._saved = None

    def __getattr__(self, name):
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        if name in ("b_q", "b_k", "b_v", "b_o"):
            return None  # bias=False
        raise AttributeError(name)

    def _project(self, x, name, width, what):
        """``x @ W + b`` for projection ``name``
        ("q", "k", "v" or "o"), after checking the width."""
        if x.ndim != 3 or x.shape[-1] != width:
            raise ValueError(f"{what} must have shape (B, length, {width}); got {x.shape}")
        # (B, length, width) @ (width, out) -> (B, length, out)
        y = x @ self.params["W_" + name].astype(x.dtype)
        b = self.params.get("b_" + name)
        return y if b is None else y + b.astype(x.dtype)

    def forward(self, query, key=None, value=None, attn_mask=None, key_padding_mask=None,
                is_causal=False, need_weights=False, *, cache=None, block_mask=None):
        """Attend from ``query`` to ``key``/``value`` (default: self-attention on ``query``).

        Parameters
        ----------
        query : array_like, ``(B, L, embed_dim)``
        key : array_like, ``(B, S, kdim)``, optional (default ``query``)
        value : array_like, ``(B, S, vdim)``, optional (default ``key``)
        attn_mask : array_like, optional
            Boolean (True = may attend) or float bias, broadcastable to ``(B, Hq, L, S)``.
        key_padding_mask : array_like of bool, ``(B, S)``, optional
            **True marks padding** (as in ``nn.MultiheadAttention``): those keys are hidden.
        is_causal : bool
            Causal mask, top-left aligned; bottom-right aligned when decoding with a cache.
        need_weights : bool
            Also return the per-head attention weights ``(B, Hq, L, S)``
            (PyTorch averages them over heads by default: take ``.mean(axis=1)``).
        cache : KVCache, optional
            Decoding: the new keys/values are appended to ``cache`` and ``query``
            attends to everything cached (self-attention only, no backward).
        block_mask : BlockMask, optional
            With ``attention="flash"``: the mask as a block mask
            (:func:`attention_scratch.create_block_mask`, B = None or the batch, H = None or
            ``num_heads``), in place of ``is_causal`` and the other masks.

        Returns
        -------
        out : ``(B, L, embed_dim)``; with ``need_weights``, ``(out, weights)``.

        Notes
        -----
        NaN and infinities follow docs/design.md §3 through the layer: a query row that sees a
        token holding one (or holds one) is NaN; a token it does not see (padding, the future under
        ``is_causal``) never reaches it, nor, in :meth:`backward`, the parameter gradients when
        no query sees it at all.
        """
        is_causal, need_weights = check_flag(is_causal, "is_causal"), check_flag(need_weights,
                                                                                 "need_weights")
        query = as_float_array(query, "query")
        self_attention = key is None and value is None
        key_defaulted, value_defaulted = key is None, value is None
        key = query if key is None else as_float_array(key, "key")
        value = key if value is None else as_float_array(value, "value")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ValueError("query (B, L, ·), key (B, S, ·) and value (B, S, ·) "
                             f"must agree on B and S; got shapes {query.shape}, "
                             f"{key.shape}, {value.shape}")
        q = split_heads(self._project(query, "q", self.embed_dim, "query"),
                        self.num_heads)  # (B, Hq, L, D)
        k = split_heads(self._project(key, "k", self.kdim, "key"),
                        self.num_kv_heads)  # (B, Hkv, S, D)
        v = split_heads(self._project(value, "v", self.vdim, "value"),
                        self.num_kv_heads)  # (B, Hkv, S, D)
        if cache is not None and not self_attention:
            raise ValueError("cache= is for self-attention decoding: pass key=None and value=None")
        start = 0 if cache is None else cache.length  # position of the first new token
        pos_q, pos_k = start + np.arange(q.shape[-2]), start + np.arange(k.shape[-2])
        if self.rope:
            q, k = apply_rope(q, pos_q), apply_rope(k, pos_k)  # rotated by position
        if cache is not None:
            k, v = cache.append(k, v)  # (B, Hkv, S_cached + L, D)
        B, L, S = query.shape[0], q.shape[-2], k.shape[-2]
        if self.attention == "flash" and cache is None:
            return self._flash_forward(query, key, value, q, k, v, attn_mask, key_padding_mask,
                                       is_causal, need_weights, block_mask,
                                       (self_attention, key_defaulted, value_defaulted, pos_q,
                                        pos_k))
        if block_mask is not None:
            raise ValueError("block_mask= needs attention='flash' (and no cache)")
        attn_mask = check_attn_mask(attn_mask, (B, self.num_heads, L, S))  # names the argument
        if key_padding_mask is not None:
            # True = may attend
            key_padding_mask = key_padding_to_keep(key_padding_mask)  # (B, 1, 1, S)
            check_broadcastable(key_padding_mask.shape[::3], (B, S), "key_padding_mask (B, S)")
        mask = combine_masks(attn_mask, key_padding_mask)
        align = "bottom_right" if cache is not None else "top_left"
        heads, weights = scaled_dot_product_attention(q, k, v, mask, is_causal=is_causal,
                                                      enable_gqa=True, causal_align=align,
                                                      return_weights=True)  # (B, Hq, L, D)
        merged = merge_heads(heads)  # (B, L, embed_dim)
        out = self._project(merged, "o", self.embed_dim, "merged heads")  # (B, L, embed_dim)
        if cache is None:  # what backward needs, copied: the caller may edit its arrays in place
            inputs = _private_copies(query, key, value)
            self._saved = dict(
                query=inputs[0], key=inputs[1], value=inputs[2], q=q, k=k, v=v,
                mask=None if mask is None else mask.copy(), is_causal=is_causal, merged=merged,
                flash=None,
                self_attention=self_attention, pos_q=pos_q, pos_k=pos_k,
                key_defaulted=key_defaulted, value_defaulted=value_defaulted)
        else:
            self._saved = None
        return (out, weights) if need_weights else out

    __call__ = forward

    def _flash_forward(self, query, key, value, q, k, v, attn_mask, key_padding_mask, is_causal,
                       need_weights, block_mask, roles):
        """The ``attention="flash"`` path of :meth:`forward`: tiled kernels, no weights."""
        if need_weights:
            raise ValueError("need_weights=True is not available with attention='flash': the "
                             "tiled kernels never form the weights (use attention='dense')")
        if attn_mask is not None or key_padding_mask is not None:
            raise ValueError("with attention='flash' pass the mask as block_mask= "
                             "(at.create_block_mask), not attn_mask or key_padding_mask")
        if block_mask is not None and is_causal:
            raise ValueError("with a block_mask, is_causal must be False: write causality into "
                             "the mask_mod")
        kw = {"enable_gqa": True, "backend": self.backend}
        if block_mask is None:
            heads, lse = flash_attention(q, k, v, is_causal, return_lse=True,
                                         **kw)  # (B, Hq, L, D), (B, Hq, L)
        else:
            heads, lse = flex_attention(q, k, v, block_mask=block_mask, return_lse=True,
                                        **kw)  # (B, Hq, L, D), (B, Hq, L)
        merged = merge_heads(heads)  # (B, L, embed_dim)
        out = self._project(merged, "o", self.embed_dim, "merged heads")  # (B, L, embed_dim)
        inputs = _private_copies(query, key, value)
        self_attention, key_defaulted, value_defaulted, pos_q, pos_k = roles
        self._saved = {
            "query": inputs[0], "key": inputs[1], "value": inputs[2], "q": q, "k": k, "v": v,
            "mask": None, "is_causal": is_causal, "merged": merged,
            "self_attention": self_attention, "pos_q": pos_q, "pos_k": pos_k,
            "key_defaulted": key_defaulted, "value_defaulted": value_defaulted,
            "flash": (heads, lse, block_mask)}
        return out

    def _attention_backward(self, d_heads, s):
        """dQ, dK, dV of the attention itself, dense or through the tiled kernels."""
        if s["flash"] is None:
            return scaled_dot_product_attention_backward(
                d_heads, s["q"], s["k"], s["v"], s["mask"], is_causal=s["is_causal"],
                enable_gqa=True)  # (B, Hq, L, D), (B, Hkv, S, D) x2
        heads, lse, block_mask = s["flash"]
        kw = {"enable_gqa": True, "backend": self.backend}
        if block_mask is None:
            return flash_attention_backward(d_heads, s["q"], s["k"], s["v"], heads, lse,
                                            s["is_causal"], **kw)
        return flex_attention_backward(d_heads, s["q"], s["k"], s["v"], heads, lse,
                                       block_mask=block_mask, **kw)

    def backward(self, grad_out):
        """Gradients of the last :meth:`forward` call (without a cache).

        Parameters
        ----------
        grad_out : array_like, ``(B, L, embed_dim)``
            dL/dout.

        Returns
        -------
        (grad_query, grad_key, grad_value)
            Shaped like the inputs. An omitted input is the one it defaulted to, and its
            gradient goes there: for self-attention (``key`` and ``value`` not given)
            ``grad_query`` holds the whole gradient of the one input and ``grad_key``,
            ``grad_value`` are None; if only ``key`` was omitted (it is the query),
            ``grad_query`` includes the key path and ``grad_key`` is None; if only
            ``value`` was omitted, ``grad_key`` includes its share and ``grad_value`` is None.
            Parameter gradients go to ``.grads``. The inputs are copied by :meth:`forward`,
            so editing them in place before ``backward`` changes nothing.
        """
        s = self._saved
        if s is None:
            raise ValueError("backward needs a preceding forward call without cache=")
        g = as_float_array(grad_out, "grad_out")
        if g.shape != s["merged"].shape:
            raise ValueError("grad_out must have the output's shape "
                             f"{s['merged'].shape}; got {g.shape}")
        grads = {"W_o": np.einsum("bli,blo->io", s["merged"], g)}  # (embed_dim, embed_dim)
        d_merged = g @ self.params["W_o"].T.astype(g.dtype)  # (B, L, embed_dim)
        d_q, d_k, d_v = self._attention_backward(split_heads(d_merged, self.num_heads),
                                                 s)  # (B, Hq, L, D), (B, Hkv, S, D) x2
        if self.rope:  # back through the rotations
            d_q, d_k = apply_rope_backward(d_q, s["pos_q"]), apply_rope_backward(d_k, s["pos_k"])
        d_inputs = {}
        for name, d_heads, x in (("q", d_q, s["query"]), ("k", d_k, s["key"]),
                                 ("v", d_v, s["value"])):
            d_proj = merge_heads(d_heads)  # (B, length, Hx·D)
            x = _absent_tokens(x, d_proj)  # a NaN token no query sees (padding) stays out of dW
            grads["W_" + name] = np.einsum("bli,blo->io", x, d_proj)  # (in, Hx·D)
            if "b_" + name in self.params:
                grads["b_" + name] = d_proj.sum(axis=(0, 1))
            d_inputs[name] = d_proj @ self.params["W_"
                                                  + name].T.astype(d_proj.dtype)  # (B, length, in)
        if "b_o" in self.params:
            grads["b_o"] = g.sum(axis=(0, 1))
        self.grads = grads
        if s["self_attention"]:
            return d_inputs["q"] + d_inputs["k"] + d_inputs["v"], None, None
        if s["key_defaulted"]:  # key defaulted to query, value given
            return d_inputs["q"] + d_inputs["k"], None, d_inputs["v"]
        if s["value_defaulted"]:  # value defaulted to key
            return d_inputs["q"], d_inputs["k"] + d_inputs["v"], None
        return d_inputs["q"], d_inputs["k"], d_inputs["v"]

    def new_cache(self, capacity=16):
        """An empty :class:`KVCache` for decoding with this layer."""
        return KVCache(capacity)
