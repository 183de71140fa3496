"""A tiny decoder-only transformer in NumPy, assembled from this library's pieces (chapter 15).

Token embedding (:class:`attention_scratch.nn.Embedding`) plus the sinusoidal
position encoding (:func:`attention_scratch.positional.sinusoidal_encoding`);
``num_layers`` pre-LayerNorm blocks

    x = x + MultiHeadAttention(LayerNorm(x), causal)
    x = x + MLP(LayerNorm(x))

with :class:`attention_scratch.MultiHeadAttention` and the layers of
:mod:`attention_scratch.transformer_layers`; a final LayerNorm and a linear
read-out to the vocabulary (optionally tied to the embedding). Every piece has a
hand-written backward pass; training uses :class:`attention_scratch.optim.Adam`.
Generation runs greedily, with a KV cache per layer or by recomputing the whole
prefix at every step; both give the same tokens.

Command line (trains from scratch, prints the held-out accuracy)::

    python -m attention_scratch.transformer --task sort --seed 0
"""
import numpy as np

from .multihead import MultiHeadAttention
from .nn import Embedding, Linear, Module
from .positional import sinusoidal_encoding
from .transformer_layers import MLP, LayerNorm


class SelfAttention(Module):
    """Causal self-attention: a :class:`MultiHeadAttention` seen as a
    :class:`~attention_scratch.nn.Module`.

    ``params`` is the attention layer's own dictionary (the optimiser updates
    the live arrays); :meth:`backward` adds the layer's gradients to ``grads``.
    """

    def __init__(self, d_model, num_heads, rng, attention="dense", backend="numpy"):
        super().__init__()
        self.mha = MultiHeadAttention(d_model, num_heads, rng=rng, attention=attention,
                                      backend=backend)
        object.__setattr__(self, "params", self.mha.params)
        object.__setattr__(self, "grads", {k: np.zeros_like(v) for k, v in self.mha.params.items()})
        self.weights = None  # (B, H, L, S) of the last forward with need_weights

    def forward(self, x, cache=None, need_weights=False, attn_mask=None, block_mask=None):
        # a block mask carries its own causality (attention="flash", chapter 16)
        out = self.mha.forward(x, attn_mask=attn_mask, is_causal=block_mask is None,
                               need_weights=need_weights, cache=cache, block_mask=block_mask)
        if need_weights:
            out, self.weights = out
        return out, None  # the attention layer keeps its own saved tensors

    def backward(self, grad_out, cache=None):
        dx, _, _ = self.mha.backward(grad_out)  # (B, L, d_model): self-attention, one input
        for k, g in self.mha.grads.items():
            self.grads[k] += g
        return dx


class Block(Module):
    """One pre-LayerNorm transformer block: attention then MLP, each inside a residual.

    Shapes
    ------
    ``x`` (B, L, d_model) -> (B, L, d_model).
    """

    def __init__(self, d_model, num_heads, hidden, rng, attention="dense", backend="numpy"):
        super().__init__()
        self.ln1, self.ln2 = LayerNorm(d_model), LayerNorm(d_model)
        self.attn = SelfAttention(d_model, num_heads, rng, attention, backend)
        self.mlp = MLP(d_model, hidden, rng)

    def forward(self, x, cache=None, need_weights=False, attn_mask=None, block_mask=None):
        h, c_ln1 = self.ln1.forward(x)  # (B, L, d)
        a, _ = self.attn.forward(h, cache=cache, need_weights=need_weights, attn_mask=attn_mask,
                                 block_mask=block_mask)  # (B, L, d)
        x = x + a  # (B, L, d)
        h2, c_ln2 = self.ln2.forward(x)  # (B, L, d)
        m, c_mlp = self.mlp.forward(h2)  # (B, L, d)
        return x + m, (c_ln1, c_ln2, c_mlp)

    def backward(self, grad_out, cache):
        c_ln1, c_ln2, c_mlp = cache
        dx = grad_out + self.ln2.backward(self.mlp.backward(grad_out, c_mlp), c_ln2)  # (B, L, d)
        return dx + self.ln1.backward(self.attn.backward(dx), c_ln1)  # (B, L, d)


class TinyTransformer(Module):
    """A decoder-only transformer language model.

    Parameters
    ----------
    vocab_size, d_model, num_heads, num_layers, hidden, max_len : int
        ``hidden`` is the MLP width; ``max_len`` the longest sequence (positions).
    rng : numpy.random.Generator
    tie_weights : bool
        Read out with the transposed embedding instead of a separate matrix.
    attention, backend : str
        ``attention="flash"`` runs every attention layer on the tiled kernels of chapters 9-12
        and 16 with ``backend`` (:class:`attention_scratch.MultiHeadAttention`); decoding with
        the KV cache stays dense.

    Shapes
    ------
    ``ids`` (B, L) integers -> logits (B, L, vocab_size).
    """

    def __init__(self, vocab_size, d_model=64, num_heads=4, num_layers=2, hidden=256, max_len=64, *,
                 rng, tie_weights=False, attention="dense", backend="numpy"):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, d_model=d_model, num_heads=num_heads,
                           num_layers=num_layers, hidden=hidden, max_len=max_len,
                           tie_weights=tie_weights)
        self.tok = Embedding(vocab_size, d_model, rng)
        self.tok.params["W"] *= 0.3  # N(0, 0.09): the embeddings start no louder than the positions
        self.positions = sinusoidal_encoding(max_len, d_model)  # (max_len, d): fixed, not trained
        self.blocks = []
        for i in range(num_layers):
            block = Block(d_model, num_heads, hidden, rng, attention, backend)
            setattr(self, f"block{i}", block)  # registers the child's parameters
            self.blocks.append(block)
        self.ln_f = LayerNorm(d_model)
        if not tie_weights:
            self.head = Linear(d_model, vocab_size, rng, bias=False)

    def embed(self, ids, offset=0, positions=None):
        """Token embeddings plus the position encoding of positions ``offset .. offset + L - 1``
        (or of ``positions``, one per token: packed sequences restart at 0 in each document).

        Shapes: ``ids`` (B, L), ``positions`` (L,) or None -> (B, L, d_model).
        """
        if positions is not None:
            x, _ = self.tok.forward(ids)  # (B, L, d)
            return x + self.positions[np.asarray(positions)]  # (B, L, d)
        L = ids.shape[1]
        if offset + L > self.positions.shape[0]:
            raise ValueError(f"positions {offset}..{offset + L - 1} exceed "
                             f"max_len={self.positions.shape[0]}")
        x, _ = self.tok.forward(ids)  # (B, L, d)
        return x + self.positions[offset:offset + L]  # (B, L, d)

    def output(self, x):
        """Final LayerNorm and read-out: ``(logits, cache)``. Shapes: (B, L, d) -> (B, L, V)."""
        h, c_ln = self.ln_f.forward(x)  # (B, L, d)
        if self.config["tie_weights"]:
            return h @ self.tok.params["W"].T, (c_ln, h)  # (B, L, V)
        logits, c_head = self.head.forward(h)  # (B, L, V)
        return logits, (c_ln, c_head)

    def forward(self, ids, need_weights=False, attn_masks=None, *, block_mask=None,
                positions=None):
        """Logits for every position, and the cache :meth:`backward` needs.

        With ``need_weights`` each block keeps its attention weights in
        ``block.attn.weights`` (B, H, L, L). ``attn_masks``, one boolean mask
        (True = may attend, broadcastable to (B, H, L, L)) or None per block, is
        and-ed with the causal mask: it lets an experiment hide chosen keys from
        chosen heads. ``block_mask`` (with ``attention="flash"``) replaces the causal mask in
        every block, and ``positions`` (L,) the positions ``0 .. L-1``: packed documents
        (chapter 16).
        """
        ids = np.asarray(ids)
        x = self.embed(ids, positions=positions)  # (B, L, d)
        caches = []
        masks = attn_masks if attn_masks is not None else [None] * len(self.blocks)
        for block, mask in zip(self.blocks, masks, strict=True):
            x, c = block.forward(x, need_weights=need_weights, attn_mask=mask,
                                 block_mask=block_mask)  # (B, L, d)
            caches.append(c)
        logits, c_out = self.output(x)  # (B, L, V)
        return logits, (ids, caches, c_out)

    def backward(self, grad_logits, cache):
        """Add every parameter's gradient to ``.grads`` (call :meth:`zero_grad` first)."""
        ids, caches, (c_ln, c_read) = cache
        if self.config["tie_weights"]:
            h = c_read
            W = self.tok.params["W"]
            self.tok.grads["W"] += np.einsum("blv,bld->vd", grad_logits, h)  # (V, d)
            dh = grad_logits @ W  # (B, L, d)
        else:
            dh = self.head.backward(grad_logits, c_read)  # (B, L, d)
        dx = self.ln_f.backward(dh, c_ln)  # (B, L, d)
        for block, c in zip(reversed(self.blocks), reversed(caches), strict=True):
            dx = block.backward(dx, c)  # (B, L, d)
        self.tok.backward(dx, ids)  # positions are fixed: nothing else to update

    def new_caches(self):
        """One empty KV cache per block, for :func:`decode_step`."""
        return [block.attn.mha.new_cache() for block in self.blocks]


# BEGIN EXERCISE 15.3 (3 points): one generation step with a KV cache
# writes: caches
def decode_step(model, ids, caches):
    """Feed new tokens through ``model`` using (and extending) the KV caches;
    return the last logits.

    The new tokens sit at positions ``p .. p + n - 1`` where ``p = caches[0].length``
    is the number of tokens already cached. Embed them with
    ``model.embed(ids, offset=p)``; pass the activations through every block
    ``x, _ = block.forward(x, cache=cache)`` with that block's cache (the
    attention layer appends the new keys and values and lets the new queries
    see everything cached); finish with ``logits, _ = model.output(x)`` and
    return the logits of the last new token.

    Shapes: ``ids`` (B, n) integers; ``caches`` a list with one cache per block;
    returns (B, vocab_size).
    """
    # BEGIN SOLUTION
    x = model.embed(ids, offset=caches[0].length)  # (B, n, d): positions p .. p + n - 1
    for block, cache in zip(model.blocks, caches, strict=True):
        x, _ = block.forward(x, cache=cache)  # (B, n, d)
    logits, _ = model.output(x)  # (B, n, V)
    return logits[:, -1]  # (B, V)
    # END SOLUTION


# END EXERCISE


def generate(model, prompt, num_new, use_cache=True):
    """Greedy decoding: append ``num_new`` tokens, each the arg-max of the next-token logits.

    ``use_cache=True`` runs the prompt once and then one token per step with
    :func:`decode_step`; ``use_cache=False`` recomputes the whole sequence at
    every step. Both return the same tokens.

    Shapes
    ------
    ``prompt`` (B, P) integers -> (B, P + num_new).
    """
    seq = np.asarray(prompt)
    if use_cache:
        caches = model.new_caches()
        logits = decode_step(model, seq, caches)  # (B, V)
        for step in range(num_new):
            nxt = logits.argmax(axis=-1)[:, None]  # (B, 1)
            seq = np.concatenate([seq, nxt], axis=1)  # (B, P + step + 1)
            if step + 1 < num_new:
                logits = decode_step(model, nxt, caches)  # (B, V)
        return seq
    for _ in range(num_new):
        logits, _ = model.forward(seq)  # (B, L, V)
        seq = np.concatenate([seq, logits[:, -1].argmax(axis=-1)[:, None]], axis=1)  # (B, L + 1)
    return seq


# the training command line lives in training/transformer.py (no import cycle)
if __name__ == "__main__":
    from attention_scratch.training.transformer import main

    main()
