"""The field model: a hyper-network over coarse patches that generates the first layer of one
Fourier-feature coordinate MLP per variable; the MLPs add a residual to the bicubic
interpolation of the coarse field.

For a query at (lat, lon) in coarse cell (i, j), each of the cell's 4 corner nodes n has a
P×P patch of coarse values (all variables). The hyper-network (a small post-LN Transformer
over the patch tokens plus learnable query tokens) turns the patch into W₁, b₁ of each
variable's physics net (DeepPhysiNet §2.2: a linear map along the token axis). The physics
net reads Fourier features of the local coordinates ξ = (query − node) in cell units and
outputs a residual in units of the node's local roughness σₙ. The four corner residuals
are blended with bilinear weights (continuous across cells), and

    value(lat, lon) = bicubic(coarse)(lat, lon) + Σₙ wₙ σₙ rₙ(ξₙ)

The last layer is zero-initialised, so an untrained model *is* bicubic interpolation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from cropscope.errors import DataError
from cropscope.weather.geometry import RegularGrid
from cropscope.weather.interp import sample_grid

__all__ = ["Context", "FieldNet", "ModelConfig", "build_context", "predict_cells",
           "predict_points"]


@dataclass
class ModelConfig:
    """Sizes of the field model."""

    patch: int = 5  #: P, patch side in coarse nodes (odd)
    d_model: int = 32  #: hidden width of the hyper-network and of the physics nets
    n_heads: int = 4
    n_layers: int = 2
    n_query: int = 16  #: learnable query tokens whose outputs parameterise W₁, b₁
    n_freq: int = 8  #: Fourier frequencies per local coordinate (π·2^[-1..2])

    def __post_init__(self) -> None:
        from cropscope.errors import ModelError

        for key in ("patch", "d_model", "n_heads", "n_layers", "n_query", "n_freq"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(f"{key} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ModelError(f"d_model ({self.d_model}) must be a multiple of n_heads "
                             f"({self.n_heads})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EncoderLayer(nn.Module):
    """Post-LN Transformer encoder layer (full attention, GELU feed-forward)."""

    def __init__(self, d: int, heads: int, d_ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b t (three h e) -> three b h t e", three=3,
                            h=self.heads)
        att = F.scaled_dot_product_attention(q, k, v)
        x = self.norm1(x + self.proj(rearrange(att, "b h t e -> b t (h e)")))
        return self.norm2(x + self.ff(x))


class FieldNet(nn.Module):
    """Hyper-network + one physics net per variable (batched over variables with einsum)."""

    freqs: torch.Tensor  # a buffer

    def __init__(self, n_vars: int, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config, self.n_vars = c, n_vars
        d, n_tok = c.d_model, c.patch * c.patch
        self.n_feat = 4 * c.n_freq
        c_in = 2 * n_vars + 2
        self.inp = nn.Linear(c_in, d)
        self.pos = nn.Parameter(torch.randn(n_tok, d) * 0.02)
        self.query = nn.Parameter(torch.rand(c.n_query, d))
        self.layers = nn.ModuleList(EncoderLayer(d, c.n_heads, 2 * d) for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, d)
        # per-variable generator: linear map along the token axis → [d, F + 1] (W₁ | b₁)
        bound = 1 / math.sqrt(c.n_query)
        self.gen_w = nn.Parameter(torch.empty(n_vars, c.n_query, self.n_feat + 1)
                                  .uniform_(-bound, bound))
        self.gen_b = nn.Parameter(torch.zeros(n_vars, self.n_feat + 1))
        # per-variable trained layers: residual block + zero-initialised scalar head
        self.w2 = nn.Parameter(torch.randn(n_vars, d, d) / math.sqrt(d))
        self.b2 = nn.Parameter(torch.zeros(n_vars, d))
        self.head = nn.Parameter(torch.zeros(n_vars, d))
        self.head_b = nn.Parameter(torch.zeros(n_vars))
        freqs = math.pi * 2.0 ** torch.linspace(-1.0, 2.0, c.n_freq)
        self.register_buffer("freqs", freqs, persistent=False)

    def node_params(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens ``[B, P², C]`` → generated ``W₁ [B, V, d, F]``, ``b₁ [B, V, d]``."""
        x = self.inp(tokens) + self.pos
        q = self.query.expand(x.shape[0], -1, -1)
        x = torch.cat([q, x], dim=1)
        for layer in self.layers:
            x = layer(x)
        h = self.out(self.norm(x[:, : self.config.n_query]))  # [B, Q, d]
        a = torch.einsum("bqd,vqf->bvdf", h, self.gen_w) + self.gen_b[None, :, None, :]
        return a[..., :-1] / math.sqrt(self.n_feat), a[..., -1]

    def fourier(self, xi: torch.Tensor) -> torch.Tensor:
        """Local coordinates ``[..., 2]`` → sin/cos features ``[..., 4·n_freq]``."""
        z = xi[..., None] * self.freqs
        return rearrange(torch.cat([z.sin(), z.cos()], dim=-1), "... c f -> ... (c f)")

    def residual(self, w1: torch.Tensor, b1: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        """``W₁ [B, K, V, d, F]``, ``b₁ [B, K, V, d]``, ``ξ [B, M, K, 2]`` → ``[B, M, K, V]``."""
        g = self.fourier(xi)
        h = F.silu(torch.einsum("bkvdf,bmkf->bmkvd", w1, g) + b1[:, None])
        h = h + F.silu(torch.einsum("bmkvd,vde->bmkve", h, self.w2) + self.b2)
        return torch.einsum("bmkvd,vd->bmkv", h, self.head) + self.head_b


@dataclass
class Context:
    """Coarse grids prepared as model context (one per grid the model reads)."""

    grid: RegularGrid
    values: torch.Tensor  #: [S, V, ny, nx], float32, per-(slice, variable) mean removed
    means: torch.Tensor  #: [S, V]
    tokens: torch.Tensor  #: [S·ny·nx, P², 2V + 2]
    sigma: torch.Tensor  #: [S·ny·nx, V] local roughness per node
    periodic: bool

    @property
    def shape(self) -> tuple[int, int, int]:
        s, _, ny, nx = self.values.shape
        return s, ny, nx


def _roughness(v: np.ndarray, periodic: bool) -> np.ndarray:
    """|value − mean of the 4 neighbours| per node (replicated edges)."""
    up = np.concatenate([v[..., 1:, :], v[..., -1:, :]], axis=-2)
    dn = np.concatenate([v[..., :1, :], v[..., :-1, :]], axis=-2)
    if periodic:
        lf, rt = np.roll(v, 1, axis=-1), np.roll(v, -1, axis=-1)
    else:
        lf = np.concatenate([v[..., :1], v[..., :-1]], axis=-1)
        rt = np.concatenate([v[..., 1:], v[..., -1:]], axis=-1)
    return v - (up + dn + lf + rt) / 4.0


def _patches(v: np.ndarray, p: int, periodic: bool) -> np.ndarray:
    """``[S, V, ny, nx]`` → ``[S, ny, nx, V, p, p]`` patches centred on every node."""
    h = p // 2
    pad_y = np.concatenate([np.repeat(v[..., :1, :], h, -2), v,
                            np.repeat(v[..., -1:, :], h, -2)], axis=-2)
    if periodic:
        pad = np.concatenate([pad_y[..., -h:], pad_y, pad_y[..., :h]], axis=-1)
    else:
        pad = np.concatenate([np.repeat(pad_y[..., :1], h, -1), pad_y,
                              np.repeat(pad_y[..., -1:], h, -1)], axis=-1)
    win = np.lib.stride_tricks.sliding_window_view(pad, (p, p), axis=(-2, -1))
    return np.moveaxis(win, 1, 3)  # [S, ny, nx, V, p, p]


def build_context(values: np.ndarray, grid: RegularGrid, scale: np.ndarray, patch: int,
                  periodic: bool | None = None) -> Context:
    """Prepare ``values [S, V, ny, nx]`` (physical units) as model context.

    ``scale [V]`` is the global roughness of each variable (fixed at fit time, stored).
    """
    values = np.asarray(values, np.float64)
    if not np.isfinite(values).all():
        raise DataError("weather fields contain NaN/inf; fill or mask them before fitting")
    periodic = grid.periodic if periodic is None else periodic
    s, nv, ny, nx = values.shape
    means = values.mean(axis=(2, 3))
    centred = values - means[:, :, None, None]
    rough = _roughness(centred, periodic) ** 2  # [S, V, ny, nx]
    sig_p = _patches(rough, patch, periodic).mean(axis=(-2, -1))  # [S, ny, nx, V]
    sigma = np.sqrt(sig_p) + 1e-2 * scale
    pv = _patches(centred, patch, periodic)  # [S, ny, nx, V, p, p]
    centre = centred.transpose(0, 2, 3, 1)[..., None, None]
    rel = np.arcsinh((pv - centre) / sigma[..., None, None])
    rel = rel.reshape(s, ny, nx, nv, patch * patch).transpose(0, 1, 2, 4, 3)
    lat = np.deg2rad(grid.lat)
    node = np.concatenate([
        np.broadcast_to(np.sin(lat)[None, :, None, None], (s, ny, nx, 1)),
        np.broadcast_to(np.cos(lat)[None, :, None, None], (s, ny, nx, 1)),
        np.log(sigma / scale),
    ], axis=-1)
    tokens = np.concatenate(
        [rel, np.broadcast_to(node[:, :, :, None, :], (s, ny, nx, patch * patch, nv + 2))],
        axis=-1)
    return Context(
        grid=grid,
        values=torch.as_tensor(centred, dtype=torch.float32),
        means=torch.as_tensor(means, dtype=torch.float32),
        tokens=torch.as_tensor(tokens.reshape(s * ny * nx, patch * patch, -1),
                               dtype=torch.float32),
        sigma=torch.as_tensor(sigma.reshape(s * ny * nx, nv), dtype=torch.float32),
        periodic=periodic,
    )


def roughness_scale(values: np.ndarray, periodic: bool) -> np.ndarray:
    """Global RMS roughness per variable of ``[S, V, ny, nx]`` → ``[V]``."""
    r = _roughness(np.asarray(values, np.float64), periodic)
    return np.sqrt((r**2).mean(axis=(0, 2, 3))) + 1e-12


def to_index(ctx: Context, lat: torch.Tensor, lon: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Latitude/longitude (deg) → continuous row/column indices of the context grid."""
    g = ctx.grid
    iy = (lat - g.lat0) / g.dlat
    ix = (lon - g.lon0) / g.dlon
    if ctx.periodic:
        ix = torch.remainder(ix, g.nx)
    return iy, ix


def predict_cells(net: FieldNet, ctx: Context, s: torch.Tensor, cy: torch.Tensor,
                  cx: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor,
                  base_method: str = "bicubic",
                  node_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                  ) -> torch.Tensor:
    """Values ``[B, M, V]`` (physical units) at points grouped by coarse cell.

    ``s, cy, cx [B]`` are the slice and lower-left node of each cell; ``iy, ix [B, M]`` the
    continuous grid indices of the points (inside or on the border of their cell).
    ``node_cache`` = (node ids [U], W₁ [U, …], b₁ [U, …]) reuses hyper-network outputs.
    """
    _, ny, nx = ctx.shape
    b, m = iy.shape
    base = sample_grid(ctx.values, s.repeat_interleave(m), iy.reshape(-1), ix.reshape(-1),
                       base_method, ctx.periodic).reshape(b, m, -1)
    ky = torch.tensor([0, 0, 1, 1], device=iy.device)
    kx = torch.tensor([0, 1, 0, 1], device=iy.device)
    ny_ = (cy[:, None] + ky).clamp(max=ny - 1)
    nx_ = cx[:, None] + kx
    nx_ = torch.remainder(nx_, nx) if ctx.periodic else nx_.clamp(max=nx - 1)
    node = (s[:, None] * ny + ny_) * nx + nx_  # [B, 4]
    if node_cache is None:
        w1, b1 = net.node_params(ctx.tokens[node.reshape(-1)])
    else:
        ids, cw1, cb1 = node_cache
        pos = torch.searchsorted(ids, node.reshape(-1))
        w1, b1 = cw1[pos], cb1[pos]
    w1 = w1.reshape(b, 4, *w1.shape[1:])
    b1 = b1.reshape(b, 4, *b1.shape[1:])
    fy = iy - cy[:, None].to(iy.dtype)
    fx = ix - cx[:, None].to(ix.dtype)
    fx = torch.where(fx < -1, fx + nx, fx)  # wrapped longitudes
    xi = torch.stack([fy[:, :, None] - ky.to(fy.dtype), fx[:, :, None] - kx.to(fx.dtype)], -1)
    r = net.residual(w1, b1, xi)  # [B, M, 4, V]
    wy = torch.stack([1 - fy, 1 - fy, fy, fy], -1)
    wx = torch.stack([1 - fx, fx, 1 - fx, fx], -1)
    sig = ctx.sigma[node]  # [B, 4, V]
    res = torch.einsum("bmkv,bmk,bkv->bmv", r, wy * wx, sig)
    return base + res + ctx.means[s][:, None, :]


def cell_of(ctx: Context, iy: torch.Tensor, ix: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Lower-left node (row, column) of the coarse cell holding each index position."""
    _, ny, nx = ctx.shape
    cy = torch.floor(iy.detach()).long().clamp(0, ny - 2)
    cx = torch.floor(ix.detach()).long()
    cx = cx.clamp(0, nx - 1) if ctx.periodic else cx.clamp(0, nx - 2)
    return cy, cx


def predict_points(net: FieldNet | None, ctx: Context, s: torch.Tensor, lat: torch.Tensor,
                   lon: torch.Tensor, chunk: int = 2048, base_method: str = "bicubic",
                   ) -> torch.Tensor:
    """Values ``[N, V]`` at arbitrary points (``net=None``: the interpolation alone)."""
    iy, ix = to_index(ctx, lat, lon)
    if net is None:
        return sample_grid(ctx.values, s, iy, ix, base_method, ctx.periodic) + ctx.means[s]
    out = []
    for i in range(0, lat.shape[0], chunk):
        sl = slice(i, i + chunk)
        cy, cx = cell_of(ctx, iy[sl], ix[sl])
        out.append(predict_cells(net, ctx, s[sl], cy, cx, iy[sl, None], ix[sl, None],
                                 base_method)[:, 0])
    return torch.cat(out) if out else torch.zeros(0, ctx.values.shape[1])


def predict_grid(net: FieldNet | None, ctx: Context, s: int, lat: np.ndarray,
                 lon: np.ndarray, base_method: str = "bicubic", cells_per_chunk: int = 512,
                 ) -> np.ndarray:
    """Values ``[V, len(lat), len(lon)]`` on a regular output grid for slice ``s``.

    Points are grouped by coarse cell so each cell's hyper-network output is computed once.
    """
    lat_t = torch.as_tensor(np.asarray(lat, float), dtype=torch.float32)
    lon_t = torch.as_tensor(np.asarray(lon, float), dtype=torch.float32)
    la, lo = torch.meshgrid(lat_t, lon_t, indexing="ij")
    la, lo = la.reshape(-1), lo.reshape(-1)
    n = la.shape[0]
    nv = ctx.values.shape[1]
    sv = torch.full((n,), s, dtype=torch.long)
    if net is None:
        return predict_points(None, ctx, sv, la, lo, base_method=base_method
                              ).T.reshape(nv, len(lat), len(lon)).numpy()
    iy, ix = to_index(ctx, la, lo)
    cy, cx = cell_of(ctx, iy, ix)
    _, ny, nx = ctx.shape
    cell = cy * nx + cx
    order = torch.argsort(cell, stable=True)
    cell_sorted = cell[order]
    uniq, counts = torch.unique_consecutive(cell_sorted, return_counts=True)
    m = int(counts.max())
    # pad every cell to m points (repeat its first point), then scatter back
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - torch.repeat_interleave(starts, counts)
    cell_idx = torch.repeat_interleave(torch.arange(len(uniq)), counts)
    table = torch.repeat_interleave(starts, m).reshape(len(uniq), m).clone()
    table[cell_idx, rank] = torch.arange(n)
    out = torch.empty(n, nv)
    with torch.no_grad():
        # hyper-network once per node of the slice
        ids = torch.arange(s * ny * nx, (s + 1) * ny * nx)
        parts = [net.node_params(ctx.tokens[ids[i:i + 4096]]) for i in range(0, len(ids), 4096)]
        cache = (ids, torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
        for i in range(0, len(uniq), cells_per_chunk):
            sl = slice(i, i + cells_per_chunk)
            pts = order[table[sl]]  # [b, m] indices into the flat points
            c = uniq[sl]
            vals = predict_cells(net, ctx, torch.full((len(c),), s, dtype=torch.long),
                                 c // nx, c % nx, iy[pts], ix[pts], base_method, cache)
            out[pts.reshape(-1)] = vals.reshape(-1, nv)
    return out.T.reshape(nv, len(lat), len(lon)).numpy()
