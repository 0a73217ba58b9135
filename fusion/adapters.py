"""Cross-modal adapters: map one tower's output into the shared space of size ``D``, L2-normalised.

- ``linear``: one projection.
- ``mlp``: projection, then residual pre-LayerNorm MLP blocks.
- ``query``: a lightweight querying transformer (the Q-Former idea at small scale): a few learned
  queries cross-attend to the tower's token or patch features, then are pooled and projected. Given
  pooled features ``[N, C]`` it treats them as a single token.

Adapters are registered by name in `ADAPTERS` (`mmrec.registry.Registry`, the shape models and encoder
families use): ``@ADAPTERS.register("name")`` above a class taking an `AdapterConfig` adds one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmrec.registry import Registry

ADAPTERS: Registry[type[nn.Module]] = Registry("adapter")


@dataclass
class AdapterConfig:
    """Which adapter, its input size (the tower's ``dim``) and the space's size ``out_dim``."""

    kind: str = "mlp"  # a name in ADAPTERS: linear, mlp, query
    in_dim: int = 384
    out_dim: int = 256
    hidden: int = 1024
    n_blocks: int = 1
    n_queries: int = 4
    n_heads: int = 4
    n_layers: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ADAPTERS:
            raise ValueError(f"AdapterConfig.kind {self.kind!r} is not a registered adapter; known: {ADAPTERS.names()}")
        if self.in_dim < 1 or self.out_dim < 1:
            raise ValueError(f"AdapterConfig dims must be positive, got in_dim={self.in_dim}, out_dim={self.out_dim}")
        if self.kind == "query" and self.out_dim % self.n_heads:
            raise ValueError(f"query adapter: out_dim {self.out_dim} must be divisible by n_heads {self.n_heads}")


@ADAPTERS.register("linear")
class LinearAdapter(nn.Module):
    """``normalize(W x + b)``."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(config.in_dim, config.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(x), dim=-1)


class _Block(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


@ADAPTERS.register("mlp")
class MLPAdapter(nn.Module):
    """Projection into ``D`` followed by residual pre-LayerNorm MLP blocks and a final LayerNorm."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(config.in_dim, config.out_dim)
        self.blocks = nn.Sequential(*(_Block(config.out_dim, config.hidden, config.dropout)
                                      for _ in range(config.n_blocks)))
        self.norm = nn.LayerNorm(config.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.norm(self.blocks(self.proj(x))), dim=-1)


@ADAPTERS.register("query")
class QueryAdapter(nn.Module):
    """Learned queries cross-attending to token features ``[N, T, C]`` (optionally masked), pooled to ``D``."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        dim = config.out_dim
        self.queries = nn.Parameter(torch.randn(config.n_queries, dim) * dim ** -0.5)
        self.token_proj = nn.Linear(config.in_dim, dim)
        layer = nn.TransformerDecoderLayer(dim, config.n_heads, dim_feedforward=config.hidden,
                                           dropout=config.dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, config.n_layers)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``[N, T, C]`` tokens or ``[N, C]`` pooled; ``mask``: ``[N, T]`` true where a token is padding."""
        if x.dim() == 2:
            x = x[:, None, :]
        memory = self.token_proj(x)
        queries = self.queries.expand(len(x), -1, -1)
        hidden = self.decoder(queries, memory, memory_key_padding_mask=mask)
        return F.normalize(self.out(hidden.mean(1)), dim=-1)


def create_adapter(config: AdapterConfig) -> nn.Module:
    """The adapter registered as ``config.kind``."""
    return ADAPTERS.get(config.kind)(config)
