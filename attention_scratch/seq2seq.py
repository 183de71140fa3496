"""An RNN encoder-decoder with pluggable attention, trained on the date task (chapters 2 and 3).

Encoder: character embeddings and a bidirectional GRU (:mod:`attention_scratch.rnn`).
Decoders, by ``attention``:

* ``"none"`` — the RNN encoder-decoder of Cho et al. (2014): the encoder's final
  state ``z`` is the only thing the decoder sees, at every step:
  ``s_i = GRU([y_{i-1}; z], s_{i-1})``, output from ``[s_i; z]``.
* ``"bahdanau"`` — Bahdanau et al. (2015): ``c_i`` = additive attention with
  ``s_{i-1}``; ``s_i = GRU([y_{i-1}; c_i], s_{i-1})``; output from ``[s_i; c_i]``.
* ``"luong-<score>"`` and ``"luong-local-m"``, ``"luong-local-p"`` — Luong et al.
  (2015): ``h_t = GRU([y_{t-1}; h̃_{t-1}], h_{t-1})`` (input feeding); ``c_t`` from
  attention with ``h_t``; ``h̃_t = tanh(W_c [c_t; h_t])``; output from ``h̃_t``.
  The local variants use the general score.

Run ``python -m attention_scratch.seq2seq --attention bahdanau --seed 3`` to train one
(:mod:`attention_scratch.training.seq2seq`).
"""
import dataclasses

import numpy as np

from .additive import AdditiveAttention
from .date_task import BOS, PAD
from .luong import AttentionalState, LuongAttention
from .nn import Embedding, Linear, Module, cross_entropy
from .rnn import BiGRUEncoder, GRUCell

ATTENTIONS = ("none", "bahdanau", "luong-dot", "luong-general", "luong-concat",
              "luong-local-m", "luong-local-p")


@dataclasses.dataclass
class Config:
    """Sizes of the model and the training run (every field is a command-line option)."""

    attention: str = "bahdanau"
    vocab_size: int = 72  # len(CharVocab()): 3 specials and 69 characters
    emb: int = 16
    enc_hidden: int = 32  # per direction; the annotations have 2 * enc_hidden
    dec_hidden: int = 64
    attn_dim: int = 32
    window: int = 4  # D, half-width of Luong's local window
    seed: int = 3
    steps: int = 1500
    batch: int = 64
    lr: float = 3e-3
    clip: float = 5.0
    data_seed: int = 0
    max_dates: int = 1
    n_train: int = 20000
    n_heldout: int = 1000
    dtype: str = "float32"  # float64 for gradient checks


class Seq2Seq(Module):
    """The encoder-decoder. ``loss_and_backward(batch)`` trains;
    ``greedy(src, keep, max_len)`` decodes.

    Shapes
    ------
    ``src`` (B, S) ids with ``keep`` (B, S) True at real characters; ``tgt_in`` and
    ``tgt_out`` (B, T). Annotations (B, S, 2·enc_hidden); decoder state (B, dec_hidden).
    """

    def __init__(self, config):
        super().__init__()
        if config.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}; got {config.attention!r}")
        self.config = c = config
        rng = np.random.default_rng(c.seed)
        self.kind = "luong" if c.attention.startswith("luong") else c.attention
        K = 2 * c.enc_hidden  # annotation size
        dt = np.dtype(c.dtype)
        self.src_emb = Embedding(c.vocab_size, c.emb, rng, padding_idx=PAD, dtype=dt)
        self.encoder = BiGRUEncoder(c.emb, c.enc_hidden, rng, dtype=dt)
        self.init = Linear(K, c.dec_hidden, rng, dtype=dt)
        self.tgt_emb = Embedding(c.vocab_size, c.emb, rng, dtype=dt)
        feed = c.dec_hidden if self.kind == "luong" else K
        self.cell = GRUCell(c.emb + feed, c.dec_hidden, rng, dtype=dt)
        if self.kind == "bahdanau":
            self.attn = AdditiveAttention(c.dec_hidden, K, c.attn_dim, rng, dtype=dt)
        elif self.kind == "luong":
            name = c.attention[len("luong-"):]
            local = name[-1] if name.startswith("local") else None
            score = "general" if local else name
            self.attn = LuongAttention(c.dec_hidden, K, rng, score=score, local=local, D=c.window,
                                       attn_dim=c.attn_dim, dtype=dt)
            self.attn_state = AttentionalState(K, c.dec_hidden, c.dec_hidden, rng, dtype=dt)
        out_in = c.dec_hidden if self.kind == "luong" else c.dec_hidden + K
        self.out = Linear(out_in, c.vocab_size, rng, dtype=dt)

    # -- encoder ---------------------------------------------------------------------------------
    def encode(self, src, keep):
        x, c_emb = self.src_emb.forward(src)  # (B, S, E)
        annotations, final, c_enc = self.encoder.forward(x, keep)  # (B, S, K), (B, K)
        pre, c_init = self.init.forward(final)  # (B, Hd)
        s0 = np.tanh(pre)
        memory = self.attn.prepare(annotations, keep) if self.kind in ("bahdanau",
                                                                       "luong") else None
        state = (s0, np.zeros_like(s0)) if self.kind == "luong" else s0
        return state, memory, final, (c_emb, c_enc, c_init, s0)

    def encode_backward(self, d_state0, d_memory, d_final, memory, cache):
        c_emb, c_enc, c_init, s0 = cache
        d_s0 = d_state0[0] if self.kind == "luong" else d_state0
        d_final = d_final + self.init.backward(d_s0 * (1 - s0 * s0), c_init)  # (B, K)
        if memory is not None:
            d_ann = self.attn.prepare_backward(d_memory, memory)  # (B, S, K)
        else:  # no attention: the annotations are unused, only the final state matters
            d_ann = np.zeros(c_emb.shape + (2 * self.config.enc_hidden,), dtype=d_final.dtype)
        self.src_emb.backward(self.encoder.backward(d_ann, d_final, c_enc), c_emb)

    # -- one decoder step ------------------------------------------------------------------------
    def step(self, e_t, state, memory, final, t):
        """One decoder step from the embedded previous token ``e_t`` (B, E).

        Returns ``(features for the output layer, new state, attention weights or None, cache)``.
        """
        if self.kind == "luong":
            h, h_tilde = state
            # input feeding
            h_new, c_cell = self.cell.forward(np.concatenate([e_t, h_tilde], axis=1), h)
            ctx, weights, c_attn = self.attn.forward(h_new, memory, t)  # (B, K), (B, S)
            h_tilde_new, c_state = self.attn_state.forward(ctx, h_new)  # (B, Hd)
            return h_tilde_new, (h_new, h_tilde_new), weights, (c_cell, c_attn, c_state)
        if self.kind == "bahdanau":
            ctx, weights, c_attn = self.attn.forward(state, memory)  # attends with s_{i-1}
        else:
            ctx, weights, c_attn = final, None, None  # the fixed summary, every step
        s_new, c_cell = self.cell.forward(np.concatenate([e_t, ctx], axis=1), state)  # (B, Hd)
        return np.concatenate([s_new, ctx], axis=1), s_new, weights, (c_cell, c_attn)  # (B, Hd + K)

    def step_backward(self, d_feat, d_state, cache, d_memory, d_final):
        """Backward of :meth:`step`: returns ``(d_state_prev, d_e_t)``;
        accumulates memory/final grads."""
        E = self.config.emb
        if self.kind == "luong":
            c_cell, c_attn, c_state = cache
            d_h, d_ht = d_state
            d_ctx, d_h_new = self.attn_state.backward(d_feat + d_ht, c_state)
            d_h_new = d_h_new + d_h + self.attn.backward(d_ctx, c_attn, d_memory)
            d_x, d_h_prev = self.cell.backward(d_h_new, c_cell)
            return (d_h_prev, d_x[:, E:]), d_x[:, :E]
        c_cell, c_attn = cache
        Hd = self.config.dec_hidden
        d_x, d_s_prev = self.cell.backward(d_feat[:, :Hd] + d_state, c_cell)
        d_ctx = d_feat[:, Hd:] + d_x[:, E:]  # (B, K)
        if self.kind == "bahdanau":
            d_s_prev = d_s_prev + self.attn.backward(d_ctx, c_attn, d_memory)
        else:
            d_final += d_ctx
        return d_s_prev, d_x[:, :E]

    # -- training and decoding -------------------------------------------------------------------
    def loss_and_backward(self, batch):
        """Teacher-forced cross-entropy of one batch;
        fills ``self.gradients()``. Returns the loss."""
        src, keep = batch["src"], batch["src_mask"]
        tgt_in, tgt_out = batch["tgt_in"], batch["tgt_out"]
        self.zero_grad()
        state, memory, final, c_encode = self.encode(src, keep)
        emb, c_temb = self.tgt_emb.forward(tgt_in)  # (B, T, E)
        feats, caches = [], []
        for t in range(tgt_in.shape[1]):
            f, state, _, c = self.step(emb[:, t], state, memory, final, t)
            feats.append(f)
            caches.append(c)
        logits, c_out = self.out.forward(np.stack(feats, axis=1))  # (B, T, V)
        loss, d_logits = cross_entropy(logits, tgt_out, ignore_index=PAD)
        d_feats = self.out.backward(d_logits.astype(logits.dtype), c_out)  # (B, T, F)
        d_memory = self.attn.zero_memory_grads(memory) if memory is not None else None
        d_final = np.zeros_like(final)
        d_state = tuple(np.zeros_like(s)
                        for s in state) if self.kind == "luong" else np.zeros_like(state)
        d_emb = np.zeros_like(emb)
        for t in range(tgt_in.shape[1] - 1, -1, -1):
            d_state, d_emb[:, t] = self.step_backward(d_feats[:, t], d_state, caches[t], d_memory,
                                                      d_final)
        self.tgt_emb.backward(d_emb, c_temb)
        self.encode_backward(d_state, d_memory, d_final, memory, c_encode)
        return loss

    def greedy(self, src, keep, max_len):
        """Greedy decoding. Returns ``(ids (B, max_len), weights (B, max_len, S) or
        None, positions)``.

        ``positions`` (B, max_len) holds local attention's window centres ``p_t`` (else None).
        """
        state, memory, final, _ = self.encode(src, keep)
        y = np.full(src.shape[0], BOS)
        ids, weights, positions = [], [], []
        for t in range(max_len):
            f, state, w, cache = self.step(self.tgt_emb.forward(y)[0], state, memory, final, t)
            y = np.argmax(self.out.forward(f)[0], axis=-1)  # (B,)
            ids.append(y)
            weights.append(w)
            if self.kind == "luong":
                positions.append(cache[1]["p"])
        ids = np.stack(ids, axis=1)  # (B, max_len)
        weights = None if weights[0] is None else np.stack(weights, axis=1)  # (B, max_len, S)
        positions = np.stack(positions,
                             axis=1) if positions and positions[0] is not None else None  # (B, T)
        return ids, weights, positions


# the training command line lives in training/seq2seq.py (no import cycle)
if __name__ == "__main__":
    from attention_scratch.training.seq2seq import main

    main()
