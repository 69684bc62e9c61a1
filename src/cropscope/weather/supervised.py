"""Supervised continuous downscaling in space and time (DeepPhysiNet as published).

Setting (``../shared/reference/deepphysinet.md`` §1.4, §2). The input is a *coarse* field
(every ``K``-th grid point, every ``input_step`` hours; :mod:`cropscope.weather.windows`);
the target is the *fine* field (every grid point, every time of the file). The model is
trained against fine targets over many past windows (times ≤ ``--until``) and applied to
new times.

Model. Time is cut into windows of ``window`` hours (default 24 h: 5 coarse steps, as in the
paper), one starting at every input step, so every time lies in ``n_w = window/input_step``
overlapping windows. For a window:

- the **hyper-network** (post-LN Transformer, learnable query tokens, the existing
  :class:`~cropscope.weather.model.EncoderLayer`) reads the window's coarse fields as tokens
  (one token per step and variable: the whole coarse field, z-scored) and generates, per
  variable, the first-layer weights ``W₁ [H, F]`` and bias ``b₁ [H]`` of that variable's
  **physics network** (a linear map along the query-token axis, paper §2.2);
- the physics network takes coordinate features ``γ(x, y, t)`` (Fourier features of the
  latitude/longitude in the domain, smooth features of the time τ within the window, the
  UTC hour of day) through the generated layer, plus a trained layer over ``γ``, the
  **local coarse context** (the coarse fields bilinearly interpolated at the query point and
  at ±``stencil`` coarse cells around it, at every step of the window, minus the base value,
  in units of σ) and a **learned static field** (``static`` channels on the fine training
  grid, bilinear; it plays the part of the elevation / land–sea mask the file does not
  carry); SiLU, a residual block, dropout and a zero-initialised head give a residual in
  units of σ (the training RMS of fine − bilinear × linear);
- value = base + σ · residual, where the **base** is the coarse field bilinear in space and
  Catmull–Rom cubic in time (C¹ in time, unlike linear interpolation, whose derivative jumps
  at every input step).

The windows covering a time are blended with weights ``sin²(π τ / window) · 2/n_w`` (they
sum to one for ``n_w ≥ 2``, and vanish with their first derivative at the window ends), so
the field and its time derivative are continuous across hours *and* window boundaries.

Training: samples (window, hour, fine point) with hours drawn ∝ the blend weight, normalised
MSE on the residual; AdamW with warm-up + cosine learning rate; after ``warmup`` steps, PDE
residuals (autograd in metres and seconds, :mod:`cropscope.weather.equations`) at random
continuous (lat, lon, t) when the variables allow it (surface set: u10, v10, sp, t2m, q2,
rho). Nothing at or after ``--until`` is read: windows that reach past it see the last
input step repeated, as at the end of any file.

Run folder (kind ``weather-field``, ``extra.mode = "supervised"``): ``model.safetensors``
(weights), ``inputs.safetensors`` (the file's coarse steps — the model's inputs for queries —
and the hour-of-day bias table), ``optimizer.safetensors`` (optimiser and RNG states),
``supervised.json`` (configuration, grids, times, normalisation, fingerprint, history),
``run.json`` and ``manifest.json`` last. ``resume`` continues an interrupted training
bit-for-bit and refuses changed inputs or settings (sha256 fingerprint).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cropscope.errors import DataError, ModelError
from cropscope.weather.equations import Equation, PointState, get_equations
from cropscope.weather.geometry import RegularGrid
from cropscope.weather.interp import sample_grid
from cropscope.weather.model import EncoderLayer
from cropscope.weather.windows import (
    HOUR,
    StepAxis,
    baseline_fields,
    hour_bias_table,
    hour_of_day,
    parse_time,
    reference_predictions,
    step_axis,
)

__all__ = ["DownscaleNet", "SupervisedConfig", "SupervisedField", "load_supervised",
           "prepare_training", "train_supervised"]

META = "supervised.json"
WEIGHTS = "model.safetensors"
INPUTS = "inputs.safetensors"
OPTIMIZER = "optimizer.safetensors"
FORMAT = "cropscope.weather.supervised/1"


# ---------------------------------------------------------------------------- config
@dataclass
class SupervisedConfig:
    """Model and training settings (``--set key=value``); defaults measured on ERA5 UK t2m."""

    window: int = 18  #: hours per window (a multiple of the input step, ≥ 2 steps)
    d_model: int = 32  #: hyper-network width
    n_heads: int = 4
    n_layers: int = 1
    n_query: int = 8  #: learnable query tokens → generated W₁, b₁
    hidden: int = 96  #: physics-network width H
    n_freq: int = 4  #: Fourier frequencies per horizontal coordinate (π·2^0 … π·2^(n-1))
    static: int = 4  #: learned static-field channels on the fine grid
    stencil: int = 1  #: local context radius in coarse cells ((2r+1)² positions)
    dropout: float = 0.1
    hyper: bool = True  #: False: no generated layer (the paper's "without hyper-network")
    members: int = 4  #: ensemble members (physics networks per variable; prediction = mean)
    steps: int = 2000
    batch: int = 4096  #: (window, hour, fine point) samples per step
    lr: float = 2e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    warmup: int = 200  #: data-only steps before PDE terms start (when equations apply)
    pde_points: int = 512  #: collocation points per step
    w_pde: dict[str, float] = field(default_factory=lambda: {"*": 0.1})
    equations: str | list[str] = "auto"
    seed: int = 0
    #: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"; not part of the run's
    #: fingerprint, so a run trained on one device resumes on another
    device: str = "auto"
    checkpoint_every: int = 250  #: steps between checkpoints (0: only at the end)

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None) -> SupervisedConfig:
        from cropscope.settings import check_options

        config = dict(config or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ModelError(f"unknown option(s) {unknown}; known: {sorted(known)}")
        plain = {k: f.default for k, f in known.items() if f.default is not MISSING}
        check_options("weather", plain, config, error=ModelError)
        for key, value in config.items():
            if value is None:
                raise ModelError(f"weather option {key!r} must be set, got null")
        cfg = cls(**config)
        for key in ("window", "d_model", "n_heads", "n_layers", "n_query", "hidden", "batch",
                    "steps", "members"):
            if int(getattr(cfg, key)) < 1:
                raise ModelError(f"weather option {key!r} must be ≥ 1")
        for key in ("n_freq", "static", "stencil", "pde_points", "warmup"):
            if int(getattr(cfg, key)) < 0:
                raise ModelError(f"weather option {key!r} must be ≥ 0")
        if cfg.d_model % cfg.n_heads:
            raise ModelError("d_model must be a multiple of n_heads")
        from cropscope.weather.training import check_pde_weights

        check_pde_weights(cfg.w_pde)
        return cfg

    def model_dict(self) -> dict[str, Any]:
        keys = ("window", "d_model", "n_heads", "n_layers", "n_query", "hidden", "n_freq",
                "static", "stencil", "dropout", "hyper", "members")
        return {k: getattr(self, k) for k in keys}

    def pde_weight(self, name: str) -> float:
        return float(self.w_pde.get(name, self.w_pde.get("*", 0.0)))


# ---------------------------------------------------------------------------- network
def _catmull_rom(u: torch.Tensor) -> torch.Tensor:
    """Catmull–Rom weights ``[..., 4]`` for knots -1, 0, 1, 2 at ``u`` in [0, 1] (C¹)."""
    u2, u3 = u * u, u * u * u
    return 0.5 * torch.stack([-u3 + 2 * u2 - u, 3 * u3 - 5 * u2 + 2,
                              -3 * u3 + 4 * u2 + u, u3 - u2], dim=-1)


class DownscaleNet(nn.Module):
    """Hyper-network over a window of coarse fields + one physics network per variable.

    Shapes: ``V`` variables, ``n_in = window/step + 1`` steps per window, coarse grid
    ``cy × cx``, fine grid ``fy × fx``; ``F`` coordinate features, ``H`` hidden width.
    """

    freqs: torch.Tensor  # a buffer

    def __init__(self, n_vars: int, coarse_shape: tuple[int, int],
                 fine_shape: tuple[int, int], n_in: int, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        self.n_vars, self.n_in = n_vars, n_in
        self.members = int(cfg.get("members", 1))
        n_out = self.members * n_vars  # one physics network per (member, variable)
        self.coarse_shape, self.fine_shape = tuple(coarse_shape), tuple(fine_shape)
        d, h, q = int(cfg["d_model"]), int(cfg["hidden"]), int(cfg["n_query"])
        self.hidden = h
        r = int(cfg["stencil"])
        self.n_pos = (2 * r + 1) ** 2
        self.n_feat = 4 * int(cfg["n_freq"]) + 2 + 8 + n_in + 6
        n_ctx = n_vars * n_in * self.n_pos
        n_static = int(cfg["static"])
        # hyper-network
        n_nodes = coarse_shape[0] * coarse_shape[1]
        self.tok = nn.Linear(n_nodes, d)
        self.tok_pos = nn.Parameter(torch.randn(n_in * n_vars, d) * 0.02)
        self.tok_hour = nn.Linear(2, d)
        self.query = nn.Parameter(torch.rand(q, d))
        self.layers = nn.ModuleList(EncoderLayer(d, int(cfg["n_heads"]), 2 * d)
                                    for _ in range(int(cfg["n_layers"])))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, h)
        bound = 0.1 / math.sqrt(q)
        self.gen_w = nn.Parameter(torch.empty(n_out, q, self.n_feat + 1).uniform_(-bound, bound))
        self.gen_b = nn.Parameter(torch.zeros(n_out, self.n_feat + 1))
        # physics networks (batched over variables)
        n_in_feat = self.n_feat + n_ctx + n_static
        self.static = nn.Parameter(torch.zeros(1, n_static, *fine_shape))
        self.w_in = nn.Parameter(torch.randn(n_out, n_in_feat, h) / math.sqrt(n_in_feat))
        self.b_in = nn.Parameter(torch.zeros(n_out, h))
        self.w_a = nn.Parameter(torch.randn(n_out, h, h) / math.sqrt(h))
        self.b_a = nn.Parameter(torch.zeros(n_out, h))
        self.w_b = nn.Parameter(torch.randn(n_out, h, h) / math.sqrt(h))
        self.b_b = nn.Parameter(torch.zeros(n_out, h))
        self.head = nn.Parameter(torch.zeros(n_out, h))
        self.head_b = nn.Parameter(torch.zeros(n_out))
        self.drop = nn.Dropout(float(cfg["dropout"]))
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(int(cfg["n_freq"]),
                                                                    dtype=torch.float32),
                             persistent=False)

    # ------------------------------------------------------------------ hyper-network
    def hyper(self, tokens: torch.Tensor, start_hour: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Window tokens ``[U, n_in·V, cy·cx]`` (z-scored), window start hour of day ``[U]``
        → generated ``W₁ [U, V, H, F]`` and ``b₁ [U, V, H]``."""
        ph = 2 * math.pi * start_hour / 24.0
        x = self.tok(tokens) + self.tok_pos + self.tok_hour(
            torch.stack([ph.sin(), ph.cos()], -1))[:, None]
        x = torch.cat([self.query.expand(x.shape[0], -1, -1), x], dim=1)
        for layer in self.layers:
            x = layer(x)
        hq = self.out(self.norm(x[:, : self.query.shape[0]]))  # [U, Q, H]
        a = torch.einsum("uqh,vqf->uvhf", hq, self.gen_w) + self.gen_b[None, :, None, :]
        return a[..., :-1] / math.sqrt(self.n_feat), a[..., -1]

    # ------------------------------------------------------------------ physics networks
    def features(self, yn: torch.Tensor, xn: torch.Tensor, tau: torch.Tensor,
                 day_phase: torch.Tensor, step_h: float) -> torch.Tensor:
        """Coordinate features ``γ [N, F]``: ``yn, xn`` position in the domain (0–1),
        ``tau`` hours since the window start, ``day_phase`` 2π·(UTC hour)/24."""
        w = float(self.cfg["window"])
        zy, zx = yn[:, None] * self.freqs, xn[:, None] * self.freqs
        m = torch.arange(1, 5, dtype=tau.dtype, device=tau.device)
        zt = math.pi * tau[:, None] / w * m
        knots = torch.arange(self.n_in, dtype=tau.dtype, device=tau.device) * step_h
        bumps = torch.exp(-(((tau[:, None] - knots) / step_h) ** 2))
        md = torch.arange(1, 4, dtype=tau.dtype, device=tau.device)
        zd = day_phase[:, None] * md
        return torch.cat([zy.sin(), zy.cos(), zx.sin(), zx.cos(), yn[:, None], xn[:, None],
                          zt.sin(), zt.cos(), bumps, zd.sin(), zd.cos()], dim=-1)

    def static_at(self, fy: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        """Learned static field at continuous fine-grid indices → ``[N, static]``."""
        if self.static.shape[1] == 0:
            return fy.new_zeros(fy.shape[0], 0)
        zeros = torch.zeros(fy.shape[0], dtype=torch.long, device=fy.device)
        return sample_grid(self.static, zeros, fy, fx, "bilinear", periodic_x=False)

    @staticmethod
    def generated(gamma: torch.Tensor, group: torch.Tensor, w1: torch.Tensor,
                  b1: torch.Tensor) -> torch.Tensor:
        """The generated layer ``W₁ γ + b₁`` → ``[N, V, H]``: point ``n`` uses the weights
        of its window ``group[n]`` (index into ``W₁ [U, V, H, F]``, ``b₁ [U, V, H]``).

        Points are sorted by window and each window's block is one matrix product (gathering
        a ``[V, H, F]`` matrix per point would cost ``F`` times more memory traffic)."""
        order = torch.argsort(group, stable=True)
        counts = torch.bincount(group, minlength=w1.shape[0]).tolist()
        pieces = torch.split(gamma[order], counts)
        out = torch.cat([torch.einsum("nf,vhf->nvh", p, w1[u]) + b1[u]
                         for u, p in enumerate(pieces)])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return out[inverse]

    def physics(self, gamma: torch.Tensor, context: torch.Tensor, static: torch.Tensor,
                generated: torch.Tensor) -> torch.Tensor:
        """``γ [N, F]``, context ``[N, C]``, static ``[N, E]``, the generated layer's output
        ``[N, M·V, H]`` (:meth:`generated`) → residual ``[N, M, V]`` in units of σ, one per
        ensemble member (``members`` M, independently initialised, trained on their own
        errors; a prediction is their mean)."""
        z = torch.cat([gamma, context, static], dim=-1)
        h = torch.einsum("nf,vfh->nvh", z, self.w_in) + self.b_in + generated
        h = self.drop(F.silu(h))
        a = F.silu(torch.einsum("nvh,vhk->nvk", h, self.w_a) + self.b_a)
        h = h + self.drop(F.silu(torch.einsum("nvh,vhk->nvk", a, self.w_b) + self.b_b))
        out = torch.einsum("nvh,vh->nv", h, self.head) + self.head_b
        return out.reshape(out.shape[0], self.members, self.n_vars)


# ---------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """The coarse steps a model reads, on the padded knot axis, plus what maps queries."""

    axis: StepAxis
    steps: np.ndarray  #: [S, V, cy, cx] physical units, the real steps
    t_min: np.datetime64  #: first queryable time
    t_max: np.datetime64  #: last queryable time

    def knots(self) -> torch.Tensor:
        """``[n_knots, V, cy, cx]`` float32 (edge steps replicated)."""
        return torch.as_tensor(self.steps[self.axis.knot_source()], dtype=torch.float32)




# ---------------------------------------------------------------------------- the field
class SupervisedField:
    """A trained supervised downscaler: values at any (lat, lon, time) inside its inputs.

    ``fine`` / ``coarse`` are the grids (latitude ascending); ``inputs`` the coarse steps it
    reads (replace them with :meth:`with_inputs` to apply the model to another period).
    """

    def __init__(self, net: DownscaleNet, variables: Sequence[str], fine: RegularGrid,
                 coarsen: int, inputs: Inputs, norm: dict[str, list[float]],
                 hour_bias: np.ndarray, info: dict[str, Any]) -> None:
        self.net = net.eval()
        self.variables = list(variables)
        self.fine, self.coarsen = fine, int(coarsen)
        self.coarse = fine.subsample(self.coarsen)
        self.norm = {k: [float(x) for x in v] for k, v in norm.items()}
        self.hour_bias = np.asarray(hour_bias, float)
        self.info = info
        self.window = int(net.cfg["window"])
        self.step_h = inputs.axis.step_h
        self.n_w = self.window // self.step_h
        self._set_inputs(inputs)

    # ------------------------------------------------------------------ inputs
    @property
    def device(self) -> torch.device:
        """Where the network, the inputs and every query run."""
        return self.knots.device

    def to(self, device: str | torch.device) -> SupervisedField:
        """Move the network and the inputs to ``device`` (in place; returns ``self``)."""
        self.net.to(device)
        self._set_inputs(self.inputs)
        return self

    def _set_inputs(self, inputs: Inputs) -> None:
        self.inputs = inputs
        device = next(self.net.parameters()).device
        self.knots = inputs.knots().to(device)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._origin_hour = float(hour_of_day(np.array([inputs.axis.origin]))[0])
        mean = torch.tensor(self.norm["mean"], dtype=torch.float32, device=device)
        std = torch.tensor(self.norm["std"], dtype=torch.float32, device=device)
        self._zknots = (self.knots - mean[None, :, None, None]) / std[None, :, None, None]

    def with_inputs(self, path: str | Path) -> SupervisedField:
        """The same model reading the coarse steps of another file (same grid, variables)."""
        from cropscope.weather.readers import open_weather

        ds = open_weather(path, self.variables)
        _check_same_grid(ds, self.fine)
        return self.with_values(*_fine_values(ds, self.variables))

    def with_values(self, fine_vals: np.ndarray, times: np.ndarray) -> SupervisedField:
        """The same model reading the coarse steps of ``fine_vals [T, V, ny, nx]`` at
        ``times`` (on the model's fine grid)."""
        inputs = _inputs_from(fine_vals, times, self.coarsen, self.step_h,
                              self.inputs.axis.pad)
        return SupervisedField(self.net, self.variables, self.fine, self.coarsen, inputs,
                               self.norm, self.hour_bias, self.info)

    # ------------------------------------------------------------------ core prediction
    def _sigma(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.norm["sigma"], dtype=like.dtype, device=like.device)

    def _indices(self, lat: torch.Tensor, lon: torch.Tensor) -> tuple[torch.Tensor, ...]:
        g, c = self.fine, self.coarse
        fy, fx = (lat - g.lat0) / g.dlat, (lon - g.lon0) / g.dlon
        cy, cx = (lat - c.lat0) / c.dlat, (lon - c.lon0) / c.dlon
        return fy, fx, cy, cx

    def _coarse_at(self, knot: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor
                   ) -> torch.Tensor:
        """Bilinear coarse values ``[M, V]`` at knots ``[M]`` and coarse indices ``[M]``."""
        knots = self.knots.to(cy.dtype)
        return sample_grid(knots, knot, cy, cx, "bilinear", periodic_x=False)

    def base(self, cy: torch.Tensor, cx: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Bilinear in space × Catmull–Rom in time, ``[N, V]``; ``t`` hours since knot 0."""
        n_k = self.knots.shape[0]
        pos = (t / self.step_h).clamp(1.0, n_k - 2.0)
        k = torch.floor(pos.detach()).long().clamp(1, n_k - 3)
        u = pos - k.to(pos.dtype)
        wts = _catmull_rom(u)  # [N, 4]
        n = t.shape[0]
        ks = (k[:, None] + torch.arange(-1, 3, device=k.device)).reshape(-1)
        vals = self._coarse_at(ks, cy.repeat_interleave(4), cx.repeat_interleave(4))
        return torch.einsum("nkv,nk->nv", vals.reshape(n, 4, -1), wts)

    def _hyper_for(self, windows: torch.Tensor, train: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated ``(W₁, b₁)`` for window ids ``[U]`` (unique); cached when not training."""
        if not train:
            missing = [int(j) for j in windows.tolist() if int(j) not in self._cache]
            if missing:
                w1, b1 = self._hyper_raw(torch.tensor(missing, device=windows.device))
                for i, j in enumerate(missing):
                    self._cache[j] = (w1[i].detach(), b1[i].detach())
            return (torch.stack([self._cache[int(j)][0] for j in windows.tolist()]),
                    torch.stack([self._cache[int(j)][1] for j in windows.tolist()]))
        return self._hyper_raw(windows)

    def _hyper_raw(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = windows[:, None] + torch.arange(self.n_w + 1, device=windows.device)
        tok = self._zknots[idx]  # [U, n_in, V, cy, cx]
        tok = tok.reshape(tok.shape[0], -1, tok.shape[-2] * tok.shape[-1])
        dtype = self.net.tok.weight.dtype
        start = torch.remainder(self._origin_hour + windows.to(dtype) * self.step_h, 24.0)
        return self.net.hyper(tok.to(dtype), start)

    def stencil(self, j: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
        """Coarse values ``[N, n_in·P, V]`` around the points (coarse indices ``cy, cx``) at
        ±``stencil`` coarse cells (P positions), at every step of window ``j [N]``."""
        r = int(self.net.cfg["stencil"])
        off = torch.arange(-r, r + 1, dtype=cy.dtype, device=cy.device)
        oy, ox = torch.meshgrid(off, off, indexing="ij")
        n, p, k = cy.shape[0], self.net.n_pos, self.n_w + 1
        knot = (j[:, None] + torch.arange(k, device=j.device))[:, :, None].expand(n, k, p)
        knot = knot.reshape(-1)
        qy = (cy[:, None, None] + oy.reshape(1, 1, -1)).expand(n, k, p).reshape(-1)
        qx = (cx[:, None, None] + ox.reshape(1, 1, -1)).expand(n, k, p).reshape(-1)
        return self._coarse_at(knot, qy, qx).reshape(n, k * p, -1)

    def node_stencils(self) -> torch.Tensor:
        """The stencil values at every fine grid node for every knot, as a lookup table
        ``[n_knots, ny·nx, P, V]`` (training samples sit on nodes: computed once; row
        ``j + k`` of it is :meth:`stencil`'s step ``k`` of window ``j``)."""
        g, dev = self.fine, self.device
        la, lo = torch.meshgrid(torch.as_tensor(g.lat, dtype=torch.float32, device=dev),
                                torch.as_tensor(g.lon, dtype=torch.float32, device=dev),
                                indexing="ij")  # fmt: skip
        _, _, cy, cx = self._indices(la.reshape(-1), lo.reshape(-1))
        r = int(self.net.cfg["stencil"])
        off = torch.arange(-r, r + 1, dtype=cy.dtype, device=dev)
        oy, ox = torch.meshgrid(off, off, indexing="ij")
        qy = (cy[:, None] + oy.reshape(1, -1)).reshape(-1)
        qx = (cx[:, None] + ox.reshape(1, -1)).reshape(-1)
        with torch.no_grad():
            return torch.stack([
                self._coarse_at(torch.full(qy.shape, kappa, dtype=torch.long, device=dev),
                                qy, qx)
                .reshape(cy.shape[0], self.net.n_pos, -1)
                for kappa in range(self.knots.shape[0])])

    def window_residual(self, j: torch.Tensor, lat: torch.Tensor, lon: torch.Tensor,
                        t: torch.Tensor, base: torch.Tensor, train: bool = False,
                        stencil: torch.Tensor | None = None) -> torch.Tensor:
        """Residual ``[N, M, V]`` (units of σ, per ensemble member) of window ``j [N]`` at
        points / times ``t`` (``stencil``: :meth:`stencil` of the points when known)."""
        net = self.net
        fy, fx, cy, cx = self._indices(lat, lon)
        tau = t - j.to(t.dtype) * self.step_h
        phase = 2 * math.pi * (self._origin_hour + t) / 24.0
        yn = fy / max(self.fine.ny - 1, 1)
        xn = fx / max(self.fine.nx - 1, 1)
        gamma = net.features(yn, xn, tau, phase, float(self.step_h))
        # local context: stencil × steps of the window, minus the base, in σ
        if stencil is None:
            stencil = self.stencil(j, cy, cx)
        ctx = ((stencil - base[:, None, :]) / self._sigma(lat)).reshape(lat.shape[0], -1)
        static = net.static_at(fy, fx).to(lat.dtype)
        if net.cfg.get("hyper", True):
            uniq, inv = torch.unique(j, return_inverse=True)
            w1u, b1u = self._hyper_for(uniq, train)
            gen = net.generated(gamma, inv, w1u.to(lat.dtype), b1u.to(lat.dtype))
        else:
            gen = gamma.new_zeros(gamma.shape[0], net.members * net.n_vars, net.hidden)
        return net.physics(gamma, ctx, static, gen)

    def blend(self, t: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Windows covering ``t`` (hours since knot 0) and their blend weights (sum 1)."""
        first = torch.floor(t.detach() / self.step_h).long()
        ids, wts = [], []
        for m in range(self.n_w):
            j = (first - m).clamp(0, self.knots.shape[0] - self.n_w - 1)
            tau = t - j.to(t.dtype) * self.step_h
            ids.append(j)
            wts.append(torch.sin(math.pi * tau / self.window) ** 2 * (2.0 / self.n_w))
        return ids, wts

    def predict(self, lat: torch.Tensor, lon: torch.Tensor, t: torch.Tensor,
                model: bool = True) -> torch.Tensor:
        """Values ``[N, V]`` (physical units) at ``lat, lon`` (degrees) and ``t`` (hours since
        knot 0); differentiable in all three (autograd derivatives for the PDE terms)."""
        _, _, cy, cx = self._indices(lat, lon)
        base = self.base(cy, cx, t)
        if not model:
            return base
        out = base
        sig = self._sigma(lat)
        for j, w in zip(*self.blend(t), strict=True):
            r = self.window_residual(j, lat, lon, t, base).mean(dim=1)
            out = out + w[:, None] * sig * r
        return out

    # ------------------------------------------------------------------ public queries
    def hours_of(self, times: Any) -> np.ndarray:
        t = np.asarray(times).astype("datetime64[s]")
        if np.isnat(t).any():
            raise DataError("times must be valid ISO times")
        if t.size and (t.min() < self.inputs.t_min or t.max() > self.inputs.t_max):
            raise DataError(f"times must lie within the inputs, {self.inputs.t_min} … "
                            f"{self.inputs.t_max}")
        return self.inputs.axis.hours(t)

    def _check_points(self, lat: np.ndarray, lon: np.ndarray) -> None:
        g = self.fine
        eps = 1e-6
        if (np.any(lat < g.lat0 - eps) or np.any(lat > g.lat[-1] + eps)
                or np.any(lon < g.lon0 - eps) or np.any(lon > g.lon[-1] + eps)):
            raise DataError(f"points must lie in the trained domain: latitude {g.lat0:g} … "
                            f"{g.lat[-1]:g}, longitude {g.lon0:g} … {g.lon[-1]:g}")

    def sample(self, variable: str, lat: Any, lon: Any, time: Any, *, model: bool = True,
               chunk: int = 8192) -> np.ndarray:
        """Values of ``variable`` at points and times (arrays broadcast together)."""
        if variable not in self.variables:
            raise DataError(f"variable {variable!r} not in the field ({self.variables})")
        if time is None:
            raise DataError("a supervised field needs a time for every query (--time)")
        v = self.variables.index(variable)
        lat_a, lon_a, t_a = np.broadcast_arrays(np.asarray(lat, float), np.asarray(lon, float),
                                                np.asarray(time).astype("datetime64[s]"))
        shape = lat_a.shape
        lat_f, lon_f = lat_a.reshape(-1), lon_a.reshape(-1)
        self._check_points(lat_f, lon_f)
        hours = self.hours_of(t_a.reshape(-1))
        out = np.empty(lat_f.size)
        with torch.no_grad():
            for i in range(0, lat_f.size, chunk):
                sl = slice(i, i + chunk)
                dev = self.device
                out[sl] = self.predict(
                    torch.as_tensor(lat_f[sl], dtype=torch.float32, device=dev),
                    torch.as_tensor(lon_f[sl], dtype=torch.float32, device=dev),
                    torch.as_tensor(hours[sl], dtype=torch.float32, device=dev),
                    model)[:, v].cpu().numpy()
        return out.reshape(shape)

    def grid(self, times: Any, lat: np.ndarray | None = None, lon: np.ndarray | None = None,
             model: bool = True) -> np.ndarray:
        """``[T, V, len(lat), len(lon)]`` on a regular grid (default: the fine grid)."""
        lat = self.fine.lat if lat is None else np.asarray(lat, float)
        lon = self.fine.lon if lon is None else np.asarray(lon, float)
        self._check_points(lat, lon)
        hours = self.hours_of(times)
        la, lo = np.meshgrid(lat, lon, indexing="ij")
        lat_t = torch.as_tensor(la.ravel(), dtype=torch.float32, device=self.device)
        lon_t = torch.as_tensor(lo.ravel(), dtype=torch.float32, device=self.device)
        out = np.empty((hours.size, len(self.variables), lat.size, lon.size))
        with torch.no_grad():
            for i, h in enumerate(hours):
                t = torch.full_like(lat_t, float(h))
                vals = [self.predict(lat_t[s:s + 8192], lon_t[s:s + 8192], t[s:s + 8192],
                                     model) for s in range(0, lat_t.shape[0], 8192)]
                out[i] = torch.cat(vals).T.reshape(-1, lat.size, lon.size).cpu().numpy()
        return out

    def default_times(self, start: Any = None, end: Any = None, step_h: float | None = None
                      ) -> np.ndarray:
        """Times from ``start`` to ``end`` (default: the inputs' span) every ``step_h`` hours
        (default: hourly)."""
        t0 = self.inputs.t_min if start is None else parse_time(start, "--start")
        t1 = self.inputs.t_max if end is None else parse_time(end, "--end")
        step = 1.0 if step_h is None else float(step_h)
        if not step > 0:
            raise DataError("the time step must be positive")
        if t1 < t0:
            raise DataError("--end is before --start")
        n = int(np.floor((t1 - t0).astype(np.int64) / (step * HOUR))) + 1
        return t0 + (np.arange(n) * step * HOUR).astype("timedelta64[s]")

    def to_dataset(self, resolution: float | None = None, times: Any = None) -> Any:
        """Every variable on a regular grid at ``resolution`` degrees and ``times``."""
        import xarray as xr

        g = self.fine
        if resolution is None:
            lat, lon = g.lat, g.lon
        else:
            from cropscope.weather.field import check_resolution

            n_times = len(self.default_times() if times is None else np.atleast_1d(times))
            check_resolution(resolution, float(g.lat[-1] - g.lat[0]),
                             float(g.lon[-1] - g.lon[0]), n_times * len(self.variables))
            lat = np.arange(g.lat[0], g.lat[-1] + 1e-9, resolution)
            lon = np.arange(g.lon[0], g.lon[-1] + 1e-9, resolution)
        times = self.default_times() if times is None else np.asarray(times, "datetime64[s]")
        data = self.grid(times, lat, lon)
        ds = xr.Dataset(coords={"time": times.astype("datetime64[ns]"), "latitude": lat,
                                "longitude": lon})
        for v, name in enumerate(self.variables):
            ds[name] = (("time", "latitude", "longitude"), data[:, v])
        ds.attrs.update(source="cropscope.weather supervised downscaling",
                        base="bilinear x Catmull-Rom", kind="model")
        return ds

    def to_netcdf(self, path: str | Path, resolution: float | None = None,
                  times: Any = None) -> Path:
        """Write :meth:`to_dataset` to NetCDF, atomically."""
        from cropscope.weather.readers import write_netcdf

        return write_netcdf(self.to_dataset(resolution, times), path)

    # ------------------------------------------------------------------ persistence
    def meta(self) -> dict[str, Any]:
        ax = self.inputs.axis
        return {
            "format": FORMAT,
            "variables": self.variables,
            "fine_grid": self.fine.to_dict(),
            "coarsen": self.coarsen,
            "input_step_h": self.step_h,
            "pad": ax.pad,
            "origin": str(ax.origin),
            "steps": [str(t) for t in (ax.origin + (np.arange(ax.n_steps) + ax.pad)
                                       * ax.step_h * HOUR).astype("datetime64[s]")],
            "t_min": str(self.inputs.t_min),
            "t_max": str(self.inputs.t_max),
            "model_config": self.net.cfg,
            "n_in": self.net.n_in,
            "norm": self.norm,
            "info": self.info,
        }


def _save_files(out: Path, fld: SupervisedField, opt_state: dict[str, torch.Tensor] | None
                ) -> None:
    from safetensors.torch import save_file

    from cropscope.io import atomic_path, write_json

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in fld.net.state_dict().items()},
                  str(tmp))
    with atomic_path(out / INPUTS) as tmp:
        save_file({"steps": torch.as_tensor(np.ascontiguousarray(fld.inputs.steps)),
                   "hour_bias": torch.as_tensor(np.ascontiguousarray(fld.hour_bias))},
                  str(tmp))
    if opt_state is not None:
        with atomic_path(out / OPTIMIZER) as tmp:
            save_file(opt_state, str(tmp))
    write_json(out / META, fld.meta())  # last: names the step the files belong to


def _read_meta(directory: Path) -> dict[str, Any]:
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {directory / META}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{directory / META} is not a supervised weather model")
    return meta


def _field_from_files(directory: Path, meta: dict[str, Any]) -> SupervisedField:
    from safetensors.torch import load_file

    fine = RegularGrid(**meta["fine_grid"])
    coarse = fine.subsample(int(meta["coarsen"]))
    net = DownscaleNet(len(meta["variables"]), (coarse.ny, coarse.nx), (fine.ny, fine.nx),
                       int(meta["n_in"]), meta["model_config"])
    try:
        net.load_state_dict(load_file(directory / WEIGHTS))
        tensors = load_file(directory / INPUTS)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelError(f"cannot load the weights in {directory}: {exc}") from None
    steps = tensors["steps"].numpy().astype(np.float64)
    origin = np.datetime64(meta["origin"], "s")
    pad = int(meta["pad"])
    axis = StepAxis(origin, int(meta["input_step_h"]), pad, np.arange(steps.shape[0]))
    inputs = Inputs(axis, steps, np.datetime64(meta["t_min"], "s"),
                    np.datetime64(meta["t_max"], "s"))
    return SupervisedField(net, meta["variables"], fine, int(meta["coarsen"]), inputs,
                           meta["norm"], tensors["hour_bias"].numpy(), meta.get("info", {}))


def is_supervised_run(directory: str | Path) -> bool:
    """True when ``directory`` holds a supervised weather run (complete or not)."""
    return (Path(directory) / META).is_file()


def load_supervised(directory: str | Path) -> SupervisedField:
    """A complete, verified supervised run (manifest present, checksums equal)."""
    from cropscope.runs import open_run

    directory = Path(directory)
    run = open_run(directory)
    if run.spec.kind != "weather-field" or run.spec.extra.get("mode") != "supervised":
        raise ModelError(f"{directory} is not a supervised weather run "
                         "(train one with `cropscope weather train`)")
    return _field_from_files(directory, _read_meta(directory))


# ---------------------------------------------------------------------------- data
def _fine_values(ds: Any, variables: Sequence[str] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A standard dataset → fine values ``[T, V, ny, nx]`` and times ``datetime64[s]``."""
    names = list(variables) if variables else [str(v) for v in ds.data_vars]
    for v in names:
        if v not in ds:
            raise DataError(f"variable {v!r} is not in the file (has "
                            f"{sorted(map(str, ds.data_vars))})")
        dims = [d for d in ds[v].dims if d not in ("latitude", "longitude")]
        if dims != ["time"]:
            raise DataError(f"supervised downscaling reads fields [time, latitude, longitude]; "
                            f"{v} has dimensions {list(ds[v].dims)}")
    times = ds["time"].values.astype("datetime64[s]")
    values = np.stack([ds[v].values for v in names], axis=1).astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError("the fields contain NaN/inf; fill or mask them first")
    return values, times


def _check_same_grid(ds: Any, fine: RegularGrid) -> None:
    grid = RegularGrid.from_coords(ds["latitude"].values, ds["longitude"].values)
    if (grid.ny, grid.nx) != (fine.ny, fine.nx) or not (
            np.allclose(grid.lat, fine.lat, atol=1e-6) and np.allclose(grid.lon, fine.lon,
                                                                       atol=1e-6)):
        raise DataError(f"the file's grid ({grid.ny}×{grid.nx} from {grid.lat0:g}, "
                        f"{grid.lon0:g}) differs from the model's ({fine.ny}×{fine.nx} from "
                        f"{fine.lat0:g}, {fine.lon0:g})")


def _inputs_from(fine_vals: np.ndarray, times: np.ndarray, coarsen: int, step_h: int,
                 pad: int, until: np.datetime64 | None = None) -> Inputs:
    axis = step_axis(times, step_h, pad, until)
    steps = fine_vals[axis.step_index][:, :, ::coarsen, ::coarsen]
    return Inputs(axis, steps, times[0], times[-1] if until is None else min(times[-1], until))


@dataclass
class TrainingData:
    """Everything a training reads, prepared from a file (no torch model yet)."""

    variables: list[str]
    fine_grid: RegularGrid
    coarsen: int
    step_h: int
    until: np.datetime64
    times: np.ndarray  #: [T] the training times (≤ until)
    fine: np.ndarray  #: [T, V, ny, nx] training targets
    train_inputs: Inputs  #: steps ≤ until
    all_inputs: Inputs  #: every step of the file (stored for queries)
    hour_bias: np.ndarray  #: [24, V, ny, nx]
    norm: dict[str, list[float]]
    n_complete_windows: int
    window: int  #: hours per window the data were checked for


def prepare_training(path: str | Path, coarsen: int, input_step_h: float, until: str,
                     window: int = 18, variables: Sequence[str] | None = None
                     ) -> TrainingData:
    """Read a file and check the training setup (one :class:`DataError` per bad input)."""
    from cropscope.weather.readers import open_weather

    if coarsen < 2:
        raise DataError("--coarsen must be ≥ 2")
    ds = open_weather(path, variables)
    if "time" not in ds.dims:
        raise DataError("supervised downscaling needs a file with a time axis")
    fine_vals, times = _fine_values(ds, variables)
    names = list(variables) if variables else [str(v) for v in ds.data_vars]
    grid = RegularGrid.from_coords(ds["latitude"].values, ds["longitude"].values)
    if (grid.ny - 1) // coarsen + 1 < 4 or (grid.nx - 1) // coarsen + 1 < 4:
        raise DataError(f"grid {grid.ny}×{grid.nx} is too small to coarsen by {coarsen}")
    until_t = parse_time(until, "--until")
    if until_t < times[0] or until_t > times[-1]:
        raise DataError(f"--until {until_t} is outside the file ({times[0]} … {times[-1]})")
    step = step_axis(times, input_step_h, 1)  # checks the steps of the whole file
    step_h = step.step_h
    if window % step_h or window // step_h < 2:
        raise ModelError(f"window ({window} h) must be a multiple of --input-step "
                         f"({step_h} h) covering at least two steps")
    n_w = window // step_h
    pad = n_w + 2
    try:
        train_inputs = _inputs_from(fine_vals, times, coarsen, step_h, pad, until_t)
    except DataError:
        raise DataError("fewer than two windows of training data end at or before --until "
                        f"{until_t}") from None
    n_complete = train_inputs.axis.n_steps - n_w
    if n_complete < 2:
        raise DataError(f"fewer than two windows of training data ({window} h each, "
                        f"{max(n_complete, 0)} found) end at or before --until {until_t}")
    all_inputs = _inputs_from(fine_vals, times, coarsen, step_h, pad)
    keep = times <= until_t
    fine_tr, times_tr = fine_vals[keep], times[keep]
    ax = train_inputs.axis
    coarse = grid.subsample(coarsen)
    bl = baseline_fields(train_inputs.steps, ax.hours(ax.step_times(times)), coarse.lat,
                         coarse.lon, grid.lat, grid.lon, ax.hours(times_tr),
                         ("linear",))["linear"]
    hb = hour_bias_table(fine_tr, bl, hour_of_day(times_tr))
    res = fine_tr - bl
    norm = {"mean": fine_tr.mean(axis=(0, 2, 3)).tolist(),
            "std": (fine_tr.std(axis=(0, 2, 3)) + 1e-12).tolist(),
            "sigma": (np.sqrt((res**2).mean(axis=(0, 2, 3))) + 1e-12).tolist()}
    return TrainingData(names, grid, coarsen, step_h, until_t, times_tr, fine_tr,
                        train_inputs, all_inputs, hb, norm, n_complete, window)


# ---------------------------------------------------------------------------- training
def _opt_state(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], gen: torch.Generator
               ) -> dict[str, torch.Tensor]:
    out = {"rng.sampler": gen.get_state(), "rng.torch": torch.get_rng_state()}
    device = params[0].device if params else torch.device("cpu")
    if device.type == "cuda":  # dropout draws from the device's generator there
        out["rng.cuda"] = torch.cuda.get_rng_state(device)
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            out[f"{i}.{k}"] = torch.as_tensor(v).detach().cpu().clone().contiguous()
    return out


def _load_opt_state(tensors: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
                    params: Sequence[torch.Tensor], gen: torch.Generator) -> None:
    gen.set_state(tensors.pop("rng.sampler"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    cuda_state = tensors.pop("rng.cuda", None)
    device = params[0].device if params else torch.device("cpu")
    if cuda_state is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda_state, device)
    for i, p in enumerate(params):
        keys = [k for k in tensors if k.split(".", 1)[0] == str(i)]
        if keys:  # Adam's step counter stays on the CPU, its moments go with the weights
            opt.state[p] = {k.split(".", 1)[1]: tensors[k] if k.endswith(".step")
                            else tensors[k].to(device) for k in keys}


def _sample_table(fld: SupervisedField, data: TrainingData) -> tuple[torch.Tensor, ...]:
    """Every (window, training hour) pair with a non-zero blend weight: window ids, file
    hour indices, hours since knot 0, weights."""
    hours = data.train_inputs.axis.hours(data.times)
    n_k = fld.knots.shape[0]
    js, hs, ts, ws = [], [], [], []
    for j in range(n_k - fld.n_w):
        tau = hours - j * fld.step_h
        ok = (tau > 0) & (tau < fld.window)
        if not ok.any():
            continue
        idx = np.nonzero(ok)[0]
        w = np.sin(np.pi * tau[idx] / fld.window) ** 2
        js.append(np.full(idx.size, j))
        hs.append(idx)
        ts.append(hours[idx])
        ws.append(w)
    return (torch.as_tensor(np.concatenate(js)), torch.as_tensor(np.concatenate(hs)),
            torch.as_tensor(np.concatenate(ts), dtype=torch.float32),
            torch.as_tensor(np.concatenate(ws), dtype=torch.float32))


def _pde_batch(fld: SupervisedField, data: TrainingData, gen: torch.Generator, n: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = fld.fine
    lat = g.lat0 + torch.rand(n, generator=gen, dtype=torch.float64) * (g.ny - 1) * g.dlat
    lon = g.lon0 + torch.rand(n, generator=gen, dtype=torch.float64) * (g.nx - 1) * g.dlon
    h = data.train_inputs.axis.hours(data.times)
    t = float(h[0]) + torch.rand(n, generator=gen, dtype=torch.float64) * float(h[-1] - h[0])
    return lat.float(), lon.float(), (t * HOUR).float()


def pde_residuals(fld: SupervisedField, equations: Sequence[Equation], lat: torch.Tensor,
                  lon: torch.Tensor, t_s: torch.Tensor, model: bool = True
                  ) -> dict[str, torch.Tensor]:
    """Residuals (SI units, latitude bands applied) at points ``lat, lon`` (degrees) and
    times ``t_s`` (seconds since knot 0), autograd derivatives in metres and seconds."""
    lat = lat.detach().clone().requires_grad_(True)
    lon = lon.detach().clone().requires_grad_(True)
    t_s = t_s.detach().clone().requires_grad_(True)
    out = fld.predict(lat, lon, t_s / HOUR, model)
    state = PointState({v: out[:, i] for i, v in enumerate(fld.variables)}, lat, lon, t_s)
    res = {}
    for eq in equations:
        w = eq.weight(state.lat)
        for name, r in eq.residual(state).items():
            res[f"{eq.name}.{name}"] = r * w
    return res


def train_supervised(data: TrainingData, config: dict[str, Any] | None = None,
                     out_dir: str | Path | None = None, resume: bool = False,
                     progress: bool = False) -> SupervisedField:
    """Train on ``data`` (see :func:`prepare_training`); with ``out_dir``, checkpoint there
    and finish a complete run folder (``resume``: continue an interrupted training)."""
    cfg = SupervisedConfig.from_dict(config)
    if cfg.window != data.window:
        raise ModelError(f"the data were prepared for {data.window} h windows, the config "
                         f"asks for {cfg.window} h")
    n_w = cfg.window // data.step_h
    from cropscope.engine.recipe import resolve_device

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    # every random draw of the sampler is made on the CPU: the same samples on any device
    gen = torch.Generator().manual_seed(cfg.seed)
    coarse = data.fine_grid.subsample(data.coarsen)
    net = DownscaleNet(len(data.variables), (coarse.ny, coarse.nx),
                       (data.fine_grid.ny, data.fine_grid.nx), n_w + 1, cfg.model_dict())
    net.to(device)
    fld = SupervisedField(net, data.variables, data.fine_grid, data.coarsen,
                          data.train_inputs, data.norm, data.hour_bias, {})
    equations = [e for e in get_equations(cfg.equations, data.variables)
                 if cfg.pde_weight(e.name) > 0]
    from cropscope.io import digest

    fingerprint = digest(data.fine, data.times.astype(np.int64), data.train_inputs.steps,
                               data.fine_grid.to_dict(), data.variables, data.coarsen,
                               data.step_h, str(data.until),
                               {k: v for k, v in asdict(cfg).items() if k != "device"})
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    table = _sample_table(fld, data)
    node_table = fld.node_stencils()
    fine_t = torch.as_tensor(data.fine, dtype=torch.float32, device=device)
    sigma = torch.tensor(data.norm["sigma"], dtype=torch.float32, device=device)
    window_steps = torch.arange(n_w + 1, device=device)
    g = data.fine_grid
    history: dict[str, Any] = {"loss": []}
    start = 0
    started = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else None

    pde_norm: dict[str, float] = {}
    if equations:
        eval_gen = torch.Generator().manual_seed(cfg.seed + 1)
        lat_p, lon_p, t_p = (x.to(device) for x in _pde_batch(fld, data, eval_gen, 2048))
        before = pde_residuals(fld, equations, lat_p, lon_p, t_p, model=False)
        for eq in equations:
            r = torch.cat([v.detach() for k, v in before.items() if k.startswith(eq.name)])
            pde_norm[eq.name] = max(float(r.pow(2).mean()), 1e-30)
        history["pde_ms_base"] = pde_norm

    def info(step: int) -> dict[str, Any]:
        return {"step": step, "config": asdict(cfg), "fingerprint": fingerprint,
                "until": str(data.until), "train_times": [str(data.times[0]),
                                                          str(data.times[-1])],
                "n_complete_windows": data.n_complete_windows,
                "equations": [e.name for e in equations], "history": history,
                "train_seconds": round(time.perf_counter() - started + history.get(
                    "seconds_before_resume", 0.0), 2),
                "threads": torch.get_num_threads(), "device": str(device)}

    def checkpoint(step: int) -> None:
        assert out is not None
        fld.info = info(step)
        snap = SupervisedField(net, data.variables, data.fine_grid, data.coarsen,
                               data.all_inputs, data.norm, data.hour_bias, fld.info)
        _save_files(out, snap, _opt_state(opt, params, gen))

    if out is not None:
        from cropscope.io import write_json
        from cropscope.runs import RUN_FILE, begin_run

        ckpt = (out / META).is_file() and (out / OPTIMIZER).is_file() \
            and (out / WEIGHTS).is_file()
        begin_run(out)  # not loadable until the training finishes
        write_json(out / RUN_FILE, _spec(data, cfg).to_dict())
        if resume and ckpt:
            from safetensors.torch import load_file

            meta = _read_meta(out)
            old = meta.get("info", {})
            if old.get("fingerprint") != fingerprint:
                raise DataError(f"--resume: the data or settings differ from those of the "
                                f"interrupted training in {out}; train without --resume "
                                "to start again")
            net.load_state_dict(load_file(out / WEIGHTS))
            _load_opt_state(load_file(out / OPTIMIZER), opt, params, gen)
            start = int(old["step"])
            history = old.get("history", history)
            history["seconds_before_resume"] = float(old.get("train_seconds", 0.0))
            if progress:
                print(f"resuming from step {start}", file=sys.stderr)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / 50)
        return cfg.lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", file=sys.stderr, leave=False)
    net.train()
    for step in range(start, cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        pick = torch.multinomial(table[3], cfg.batch, replacement=True, generator=gen)
        j, hi, t = (table[0][pick].to(device), table[1][pick].to(device),
                    table[2][pick].to(device))  # fmt: skip
        iy = torch.randint(g.ny, (cfg.batch,), generator=gen).to(device)
        ix = torch.randint(g.nx, (cfg.batch,), generator=gen).to(device)
        lat = (g.lat0 + iy * g.dlat).float()
        lon = (g.lon0 + ix * g.dlon).float()
        target = fine_t[hi, :, iy, ix]
        _, _, cy, cx = fld._indices(lat, lon)
        base = fld.base(cy, cx, t)
        node = iy * g.nx + ix
        sten = node_table[j[:, None] + window_steps, node[:, None]]  # [B, k, P, V]
        r = fld.window_residual(j, lat, lon, t, base, train=True,
                                stencil=sten.reshape(cfg.batch, -1, sten.shape[-1]))
        loss = ((r - ((target - base) / sigma)[:, None, :]) ** 2).mean()
        parts = {"data": float(loss.detach())}
        if equations and step >= cfg.warmup:
            lat_p, lon_p, t_p = (x.to(device)
                                 for x in _pde_batch(fld, data, gen, cfg.pde_points))
            res = pde_residuals(fld, equations, lat_p, lon_p, t_p)
            for eq in equations:
                rr = torch.cat([v for k, v in res.items() if k.startswith(eq.name)])
                term = rr.pow(2).mean() / pde_norm[eq.name]
                loss = loss + cfg.pde_weight(eq.name) * term
                parts[eq.name] = float(term.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if step % 20 == 0 or step == cfg.steps - 1:
            history["loss"].append({"step": step, "total": float(loss.detach()), **parts})
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in parts.items()})
        if out is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 \
                and step + 1 < cfg.steps:
            checkpoint(step + 1)
    if bar is not None:
        bar.close()
    net.eval()
    final = SupervisedField(net, data.variables, data.fine_grid, data.coarsen,
                            data.all_inputs, data.norm, data.hour_bias, info(cfg.steps))
    if out is not None:
        from cropscope.runs import finish_run

        _save_files(out, final, _opt_state(opt, params, gen))
        finish_run(out, _spec(data, cfg))
    return final


def _spec(data: TrainingData, cfg: SupervisedConfig) -> Any:
    from cropscope.models.runs import package_versions
    from cropscope.runs import RunSpec

    return RunSpec(kind="weather-field",
                   sources={"coarse": {"bands": list(data.variables), "wavelengths": None}},
                   training={"config": json.loads(json.dumps(asdict(cfg), default=str)),
                             "coarsen": data.coarsen, "input_step_h": data.step_h,
                             "until": str(data.until)},
                   versions=package_versions(), extra={"mode": "supervised", "field": META})


# ---------------------------------------------------------------------------- evaluation
def evaluate_supervised(run_dir: str | Path, path: str | Path, start: str) -> dict[str, Any]:
    """Apply a trained run to every time ≥ ``start`` of ``path`` and score it against the
    reference interpolations at the fine points that are not input points (JSON-ready)."""
    from cropscope.weather.readers import open_weather
    from cropscope.weather.windows import heldout_mask

    t0 = time.perf_counter()
    fld = load_supervised(run_dir)
    ds = open_weather(path, fld.variables)
    _check_same_grid(ds, fld.fine)
    if "time" not in ds.dims:
        raise DataError("the evaluation file has no time axis")
    fine_vals, times = _fine_values(ds, fld.variables)
    from_t = parse_time(start, "--from")
    if from_t < times[0] or from_t > times[-1]:
        raise DataError(f"--from {from_t} is outside the file ({times[0]} … {times[-1]})")
    model = fld.with_values(fine_vals, times)
    ev = times >= from_t
    ev_times = times[ev]
    truth = fine_vals[ev]
    t_read = time.perf_counter() - t0
    # reference interpolations (scipy, as in the data set's SOURCE.md)
    until = np.datetime64(fld.info.get("until"), "s")
    train_start = np.datetime64(fld.info.get("train_times", [str(times[0])])[0], "s")
    in_train = (times >= train_start) & (times <= until)
    ref, table_source = reference_predictions(fine_vals, times, fld.coarsen, fld.step_h,
                                              fld.fine.lat, fld.fine.lon, ev, in_train,
                                              fld.hour_bias)
    t_ref = time.perf_counter() - t0 - t_read
    pred = model.grid(ev_times)
    t_model = time.perf_counter() - t0 - t_read - t_ref
    held = heldout_mask(fld.fine.ny, fld.fine.nx, fld.coarsen)

    def scores(p: np.ndarray, v: int) -> tuple[float, float]:
        e = (p[:, v] - truth[:, v])[:, held]
        return float(np.sqrt(np.mean(e**2))), float(np.mean(np.abs(e)))

    result: dict[str, Any] = {
        "run": str(run_dir), "input": str(path), "from": str(from_t),
        "to": str(ev_times[-1]), "n_times": int(ev.sum()),
        "n_points_per_time": int(held.sum()), "variables": fld.variables,
        "coarsen": fld.coarsen, "input_step_h": fld.step_h, "until": str(until),
        "overlaps_training": bool(from_t <= until), "hour_bias_from": table_source,
    }
    for v, name in enumerate(fld.variables):
        entry: dict[str, float] = {}
        entry["rmse_model"], entry["mae_model"] = scores(pred, v)
        for key, arr in ref.items():
            entry[f"rmse_{key}"], entry[f"mae_{key}"] = scores(arr, v)
        entry["ratio_model_hour_bias"] = entry["rmse_model"] / max(entry["rmse_hour_bias"],
                                                                   1e-300)
        entry["ratio_model_bilinear_linear"] = entry["rmse_model"] / max(
            entry["rmse_bilinear_linear"], 1e-300)
        result[name] = entry
    result["train_seconds"] = fld.info.get("train_seconds")
    result["timings_s"] = {"read": round(t_read, 2), "references": round(t_ref, 2),
                           "model": round(t_model, 2),
                           "total": round(time.perf_counter() - t0, 2)}
    return result
