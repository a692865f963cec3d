"""The report decoder: a small GPT-2-style decoder that cross-attends to a memory.

The memory is what the encoder side knows about a study: finding tokens (term and
modifiers, each scaled by the finding's probability), clinical-context tokens (the
indication), and, when the model was trained with images, the image encoder's patch
tokens projected to the decoder's width. A two-layer transformer encoder mixes them.
The decoder blocks are causal self-attention, cross-attention over the memory and an
MLP, pre-norm, with a key-value cache for generation (``step``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from assistant.report.decoder.vocab import IMAGE, MAX_FINDINGS, RETRIEVED


@dataclass(frozen=True)
class DecoderConfig:
    text_vocab: int
    cond_vocab: int
    width: int = 256
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 3
    mlp_ratio: int = 4
    max_len: int = 160  # target tokens, at most (BOS included)
    max_positions: int = 32  # positions within a finding or the indication
    dropout: float = 0.1
    image_dim: int | None = None  # width of the image encoder's patch tokens, if any
    # Retrieval: the nearest training reports' words join the memory (0: none), this many
    # reports, at most ``retrieved_len`` tokens of them in all.
    retrieved: int = 0
    retrieved_len: int = 128
    # The weight of the indications' similarity in ranking those reports (0: by the codes
    # alone; ``neighbours.ReportNeighbours``).
    retrieved_indication: float = 0.0
    # Copying (with retrieval): each next word is a mixture of the vocabulary softmax and
    # a copy distribution over the neighbours' words, with a learned gate (as a
    # pointer-generator network mixes them).
    copy: bool = False

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        if self.copy and not self.retrieved:
            raise ValueError("copying needs neighbour reports to copy from (retrieved > 0)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecoderConfig:
        return cls(**d)


KV = tuple[torch.Tensor, torch.Tensor]


class StepLinear(nn.Linear):
    """``nn.Linear`` that, in inference mode (``torch.inference_mode``, as drafting runs),
    multiplies by a contiguous transposed copy of its weight. A decoding step multiplies a
    few rows by every weight, and this layout made a forced 100-token report about a tenth
    faster on this CPU, with the same reports. Parameters and checkpoints are unchanged.

    The copy is remade when the weight is another tensor, has moved, or has changed in
    place as far as its version counter tells (optimisers' default steps); ``train()``,
    ``load_state_dict`` and ``.to()`` drop it. Writes the counter does not see (``.data``
    writes, fused optimiser steps) need one of those before the next inference. Outside
    inference mode (training, validation under ``no_grad``) it is a plain linear layer."""

    _t: tuple[torch.Tensor, int, int, torch.Tensor] | None = None  # weight, version, ptr, Wᵀ

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.training or not torch.is_inference_mode_enabled() or w.is_inference():
            return super().forward(x)
        cached = self._t
        if (cached is None or cached[0] is not w or cached[1] != w._version
                or cached[2] != w.data_ptr()):
            cached = self._t = (w, w._version, w.data_ptr(), w.detach().t().contiguous())
        rows = x.reshape(-1, x.shape[-1])
        wt = cached[3]
        y = rows @ wt if self.bias is None else torch.addmm(self.bias, rows, wt)
        return y.view(*x.shape[:-1], y.shape[-1])

    def train(self, mode: bool = True) -> StepLinear:
        if mode:
            self._t = None
        return super().train(mode)

    def _apply(self, fn: Any, recurse: bool = True) -> StepLinear:
        self._t = None
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._t = None
        super()._load_from_state_dict(*args, **kwargs)


class Attention(nn.Module):
    def __init__(self, c: DecoderConfig) -> None:
        super().__init__()
        self.heads, self.dropout = c.heads, c.dropout
        self.q = StepLinear(c.width, c.width)
        self.kv = StepLinear(c.width, 2 * c.width)
        self.proj = StepLinear(c.width, c.width)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # (B, nh, T, hs)

    def keys_values(self, x: torch.Tensor) -> KV:
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def forward(self, x: torch.Tensor, kv: KV, mask: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        q = self.split(self.q(x))  # (B, nh, T, hs)
        if x.shape[1] == 1 and mask is None and not self.training:
            # A decoding step's self-attention: one query per row over its cache. Two
            # batched matrix products are about 2.5x faster here than the fused kernel on
            # this CPU when the batch is many beams (measured: 160 rows, 60 cached tokens).
            w = (q @ kv[0].transpose(-1, -2)) * q.shape[-1] ** -0.5
            return self.proj((w.softmax(-1) @ kv[1]).transpose(1, 2).reshape(x.shape))
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        b, _, t, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))  # (B, T, D)


class Block(nn.Module):
    def __init__(self, c: DecoderConfig) -> None:
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(c.width) for _ in range(3))
        self.self_attn = Attention(c)
        self.cross_attn = Attention(c)
        self.mlp = nn.Sequential(StepLinear(c.width, c.mlp_ratio * c.width), nn.GELU(),
                                 StepLinear(c.mlp_ratio * c.width, c.width), nn.Dropout(c.dropout))
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, memory_kv: KV, memory_mask: torch.Tensor,
                cache: KV | None = None, group: int = 1, start: int = 0,
                ) -> tuple[torch.Tensor, KV]:
        """x (B * group, T, D) at positions start.., each ``group`` consecutive rows reading
        one memory entry of ``memory_kv`` (B, ...); with ``cache`` the new positions attend
        to the cached ones too. A cache of ``start + T`` positions has room for the new
        ones already (beam search allocates it as it reorders the beams): they are written
        in place instead of appended."""
        h = self.ln1(x)
        k, v = self.self_attn.keys_values(h)
        if cache is not None and cache[0].shape[2] == start + x.shape[1]:
            cache[0][:, :, start:], cache[1][:, :, start:] = k, v
            k, v = cache
        elif cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        causal = cache is None and x.shape[1] > 1
        x = x + self.drop(self.self_attn(h, (k, v), causal=causal))
        x = x + self.drop(ungroup(self.cross_attn(to_groups(self.ln2(x), group), memory_kv,
                                                  mask=memory_mask), x.shape[1]))
        x = x + self.mlp(self.ln3(x))
        return x, (k, v)


def to_groups(x: torch.Tensor, group: int) -> torch.Tensor:
    """(B * group, T, ...) -> (B, group * T, ...): the rows that share a memory entry become
    one row of queries, so the entry's keys and values are read once, not once per row.
    Cross-attention has no mask between queries, so each query's result is unchanged."""
    return x if group == 1 else x.reshape(x.shape[0] // group, group * x.shape[1],
                                          *x.shape[2:])


def ungroup(x: torch.Tensor, t: int) -> torch.Tensor:
    """The inverse of ``to_groups``: (B, group * T, ...) -> (B * group, T, ...)."""
    return x if x.shape[1] == t else x.reshape(-1, t, *x.shape[2:])


@dataclass
class Memory:
    """The encoded memory and, per decoder block, its cross-attention keys and values."""

    states: torch.Tensor  # (B, M, D)
    mask: torch.Tensor  # (B, 1, 1, M) True where attended
    kv: list[KV]
    # Copying: keys of the neighbours' word positions (B, R, D) and their word ids (B, R)
    copy_keys: torch.Tensor | None = None
    copy_ids: torch.Tensor | None = None
    # Decoder rows per entry: the beams (or samples) of a study are ``group`` consecutive
    # rows that share their study's entry instead of each holding a copy of it.
    group: int = 1

    def select(self, index: torch.Tensor) -> Memory:
        """The entries at ``index`` (each still read by ``group`` rows)."""
        def take(x: torch.Tensor) -> torch.Tensor:
            return x.index_select(0, index)  # much faster than x[index] on this CPU

        return Memory(take(self.states), take(self.mask), [(take(k), take(v)) for k, v in self.kv],
                      None if self.copy_keys is None else take(self.copy_keys),
                      None if self.copy_ids is None else take(self.copy_ids), self.group)

    def shared(self, group: int) -> Memory:
        """The same entries, each read by ``group`` consecutive decoder rows."""
        return replace(self, group=group)


class ReportDecoder(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        c = self.config = config
        self.cond_embed = nn.Embedding(c.cond_vocab, c.width, padding_idx=0)
        self.kind_embed = nn.Embedding(RETRIEVED + 1 if c.retrieved else RETRIEVED, c.width)
        self.slot_embed = nn.Embedding(MAX_FINDINGS + 1, c.width)
        self.pos_embed = nn.Embedding(c.max_positions, c.width)
        self.prob_scale = nn.Parameter(torch.zeros(c.width))
        self.image_proj = nn.Linear(c.image_dim, c.width) if c.image_dim else None
        layer = nn.TransformerEncoderLayer(c.width, c.heads, c.mlp_ratio * c.width, c.dropout,
                                           activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.encoder_layers,
                                             enable_nested_tensor=False)
        self.enc_norm = nn.LayerNorm(c.width)
        self.tok_embed = nn.Embedding(c.text_vocab, c.width)
        self.tpos_embed = nn.Embedding(c.max_len, c.width)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.decoder_layers))
        self.ln_f = nn.LayerNorm(c.width)
        self.head = StepLinear(c.width, c.text_vocab, bias=False)
        self.head.weight = self.tok_embed.weight  # tied
        if c.copy:
            self.copy_q = StepLinear(c.width, c.width)
            self.copy_k = nn.Linear(c.width, c.width)
            self.copy_gate = StepLinear(c.width, 1)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def _blocks(self) -> list[Block]:
        return [b for b in self.blocks if isinstance(b, Block)]

    def encode(self, cond: dict[str, torch.Tensor], image_tokens: torch.Tensor | None = None,
               ) -> Memory:
        """cond: ids, kinds, slots, positions (B, M) long; probs (B, M) float; with
        retrieval, ``retrieved`` (B, R): the neighbour reports' word ids (0 padding).
        image_tokens: (B, P, image_dim) or None."""
        ids, kinds = cond["ids"], cond["kinds"]
        x = (self.cond_embed(ids) + self.kind_embed(kinds) + self.slot_embed(cond["slots"])
             + self.pos_embed(cond["positions"].clamp(max=self.config.max_positions - 1))
             + (cond["probs"] - 1.0).unsqueeze(-1) * self.prob_scale)  # (B, M, D)
        keep = kinds > 0  # (B, M)
        ret: torch.Tensor | None = None
        if image_tokens is not None:
            if self.image_proj is None:
                raise ValueError("this decoder was trained without images; "
                                 "it cannot take image tokens")
            img = self.image_proj(image_tokens) + self.kind_embed.weight[IMAGE]  # (B, P, D)
            x = torch.cat([x, img], dim=1)
            keep = torch.cat([keep, keep.new_ones(img.shape[:2])], dim=1)
        if self.config.retrieved:
            ret = cond.get("retrieved")
            if ret is None:
                raise ValueError("this decoder reads neighbour reports; none were given")
            pos = torch.arange(ret.shape[1], device=ret.device).clamp(
                max=self.config.max_len - 1)
            x = torch.cat([x, self.tok_embed(ret) + self.tpos_embed(pos)
                           + self.kind_embed.weight[RETRIEVED]], dim=1)
            keep = torch.cat([keep, ret > 0], dim=1)
        states = self.enc_norm(self.encoder(x, src_key_padding_mask=~keep))
        mask = keep[:, None, None, :]  # (B, 1, 1, M)
        kv = [block.cross_attn.keys_values(states) for block in self._blocks()]
        if not self.config.copy or ret is None:
            return Memory(states, mask, kv)
        r = ret.shape[1]
        return Memory(states, mask, kv, self.copy_k(states[:, -r:]), ret)

    def decode(self, tokens: torch.Tensor, memory: Memory, start: int = 0,
               caches: list[KV] | None = None) -> tuple[torch.Tensor, list[KV]]:
        """tokens (B * memory.group, T) at positions start.. -> logits (B * group, T, V)
        and the new caches. A cache that already has room for the new positions (``start +
        T``, as beam search reorders them) is written in place and returned: such a cache
        serves one continuation only."""
        t = tokens.shape[1]
        if tokens.shape[0] != memory.states.shape[0] * memory.group:
            raise ValueError(f"{tokens.shape[0]} rows of tokens for {memory.states.shape[0]}"
                             f" memory entries of {memory.group} rows each")
        if start + t > self.config.max_len:
            raise ValueError(f"{start + t} tokens exceed the decoder's {self.config.max_len}")
        pos = torch.arange(start, start + t, device=tokens.device)
        x = self.tok_embed(tokens) + self.tpos_embed(pos)  # (B, T, D)
        new: list[KV] = []
        for i, blk in enumerate(self._blocks()):
            x, kv = blk(x, memory.kv[i], memory.mask, None if caches is None else caches[i],
                        memory.group, start)
            new.append(kv)
        h = self.ln_f(x)
        if memory.copy_keys is None or memory.copy_ids is None:
            return self.head(h), new
        mixed = self._copy_mixture(to_groups(h, memory.group), memory.copy_keys,
                                   memory.copy_ids)
        return ungroup(mixed, t), new

    def _copy_mixture(self, h: torch.Tensor, keys: torch.Tensor, ids: torch.Tensor,
                      ) -> torch.Tensor:
        """Log-probabilities (B, T, V): gate * softmax(head) + (1 - gate) * copy, where
        copy puts each neighbour position's attention on its word. A row without
        neighbour words writes from the vocabulary alone. (Log-probabilities pass through
        ``log_softmax`` and ``cross_entropy`` unchanged.)"""
        scores = self.copy_q(h) @ keys.transpose(1, 2) / keys.shape[-1] ** 0.5  # (B, T, R)
        present = ids > 0  # (B, R)
        attn = scores.masked_fill(~present[:, None, :], -torch.inf).softmax(-1)
        attn = torch.nan_to_num(attn, nan=0.0)
        gate = torch.sigmoid(self.copy_gate(h))  # (B, T, 1)
        gate = torch.where(present.any(-1)[:, None, None], gate, torch.ones_like(gate))
        probs = gate * self.head(h).softmax(-1)
        probs = probs.scatter_add(-1, ids[:, None, :].expand(-1, h.shape[1], -1),
                                  (1 - gate) * attn)
        return probs.clamp_min(1e-12).log()

    def forward(self, cond: dict[str, torch.Tensor], tokens: torch.Tensor,
                image_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) for input tokens (B, T) starting with BOS."""
        return self.decode(tokens, self.encode(cond, image_tokens))[0]
