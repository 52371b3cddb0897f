"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the last ``max_len`` items.

Pre-LayerNorm blocks, learned positions, padding masked out; the representation at the newest position is
scored against the (tied) item embeddings plus a per-item bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from r2rec.baselines.layers import FastDropout
from r2rec.baselines.trainer import NeuralConfig, NeuralRecommender


@dataclass
class SASRecConfig(NeuralConfig):
    """``NeuralConfig`` plus ``n_heads``: attention heads per block (``hidden`` must divide by it)."""

    n_heads: int = 1


class _Block(nn.Module):
    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), FastDropout(dropout), nn.Linear(hidden, hidden))
        self.drop = FastDropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, H = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(H, dim=2)
        q, k, v = (t.view(B, L, self.n_heads, H // self.n_heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, H)))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRecNet(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        if cfg.hidden % cfg.n_heads:
            raise ValueError(f"sasrec: hidden={cfg.hidden} is not divisible by n_heads={cfg.n_heads}")
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)  # id 0 = padding
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.drop = FastDropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg.hidden, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks))
        self.ln = nn.LayerNorm(cfg.hidden)
        self.out_bias = nn.Parameter(torch.zeros(n_items))
        self.scale = math.sqrt(cfg.hidden)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, L]`` left-padded shifted ids -> logits ``[B, n_items]`` for the next item."""
        B, L = x.shape
        valid = x > 0
        pos = torch.arange(L, device=x.device)
        h = self.drop(self.item_emb(x) * self.scale + self.pos_emb(pos)[None])
        h = h * valid[..., None]
        # Causal, padding keys hidden; every query may see itself so no row is fully masked (no NaN).
        causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        mask = (causal[None] & valid[:, None, :]) | torch.eye(L, dtype=torch.bool, device=x.device)[None]
        mask = mask[:, None]  # [B, 1, L, L], broadcast over heads
        for block in self.blocks:
            h = block(h, mask) * valid[..., None]
        rep = self.ln(h[:, -1])
        return rep @ self.item_emb.weight[1:].T + self.out_bias


class SASRecRecommender(NeuralRecommender):
    name = "sasrec"
    config_cls = SASRecConfig
    align = "left"

    def build_net(self, n_items: int) -> nn.Module:
        return SASRecNet(n_items, self.config)
