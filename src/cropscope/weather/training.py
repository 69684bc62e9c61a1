"""Fit a field model: data loss (multi-scale, on grid points) → then PDE residual losses.

Data loss. The fitted grid is the only truth. Two terms use it:

- *multi-scale*: the model reads a sub-lattice of the grid (every ``selfsup_factor``-th node,
  every offset) as context and predicts the grid points between those nodes, i.e. it learns
  to refine an interpolation one scale up, where labels exist (the same network then refines
  the real grid; its inputs are in units of local roughness, so they are scale-free);
- *nodes*: at the real scale, predictions at grid nodes equal the data.

Physics loss. After ``warmup`` data-only steps, PDE residuals (``equations``) are added at
random collocation points inside coarse cells, with autograd derivatives in metres
(latitude-dependent spacing). Each equation's loss is normalised by its residual for the
untrained model (= bicubic interpolation), so weights are relative.

Checkpoints (``out_dir``): ``model.safetensors``, ``context.safetensors``,
``optimizer.safetensors`` and ``field.json`` (configs, step, history, RNG); ``resume=True``
continues an interrupted fit from the last checkpoint.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cropscope.errors import DataError, ModelError
from cropscope.weather.equations import Equation, PointState, get_equations
from cropscope.weather.field import FIELD_JSON, WeatherField, save_field_files
from cropscope.weather.geometry import RegularGrid
from cropscope.weather.model import (
    Context,
    FieldNet,
    ModelConfig,
    build_context,
    predict_cells,
    roughness_scale,
    to_index,
)

__all__ = ["TrainConfig", "fit_field", "pde_residuals"]

OPTIMIZER = "optimizer.safetensors"


@dataclass
class TrainConfig:
    """Training settings (defaults tuned on ERA-Interim u/v/z, 2.25° → 0.75°)."""

    steps: int = 400
    warmup: int = 150  #: data-only steps before the PDE terms start
    lr: float = 2e-3
    weight_decay: float = 1e-4
    cells: int = 96  #: coarse cells per multi-scale data batch
    node_cells: int = 64  #: cells per node (real-scale) data batch
    pde_cells: int = 48  #: cells per collocation batch
    pde_points: int = 8  #: collocation points per cell
    selfsup_factor: int = 3  #: sub-lattice factor of the multi-scale loss (0: off)
    w_multiscale: float = 1.0
    w_nodes: float = 1.0
    w_pde: dict[str, float] = field(default_factory=lambda: {"*": 0.1})
    equations: str | list[str] = "auto"
    grad_clip: float = 1.0
    seed: int = 0
    base: str = "bicubic"
    checkpoint_every: int = 0  #: steps between checkpoints (0: only at the end)
    eval_points: int = 4096  #: fixed collocation set for residual statistics

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ModelError(f"unknown training option(s) {sorted(unknown)}; known: "
                             f"{sorted(known)}")
        check_pde_weights(d.get("w_pde", {"*": 0.1}))
        return cls(**d)

    def pde_weight(self, name: str) -> float:
        return float(self.w_pde.get(name, self.w_pde.get("*", 0.0)))


def check_pde_weights(weights: Any) -> None:
    """``w_pde``: a mapping from equation names (or ``"*"``, every other one) to weights
    >= 0; a misspelt equation would silently weigh nothing."""
    from cropscope.weather.equations import EQUATIONS

    if not isinstance(weights, dict):
        raise ModelError(f"w_pde must map equation names (or '*') to weights, got {weights!r}")
    for name, w in weights.items():
        if name != "*" and name not in EQUATIONS:
            raise ModelError(f"w_pde: unknown equation {name!r}; known: '*', "
                             f"{', '.join(sorted(EQUATIONS))}")
        if isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0 \
                or w == float("inf"):
            raise ModelError(f"w_pde[{name!r}] must be a finite number >= 0, got {w!r}")


def _split_config(config: dict[str, Any] | None) -> tuple[ModelConfig, TrainConfig]:
    from dataclasses import MISSING

    from cropscope.settings import check_options

    config = dict(config or {})
    plain = {f.name: f.default for c in (ModelConfig, TrainConfig) for f in fields(c)
             if f.type in ("int", "float", "bool", "str") and f.default is not MISSING}
    check_options("weather", plain, config, error=ModelError)  # lr=abc, steps=0...
    mkeys = {f.name for f in fields(ModelConfig)}
    mc = ModelConfig(**{k: config.pop(k) for k in list(config) if k in mkeys})
    if mc.patch % 2 == 0 or mc.patch < 3:
        raise ModelError("patch must be odd and ≥ 3")
    return mc, TrainConfig.from_dict(config)


# ---------------------------------------------------------------------------- samplers
class _Sampler:
    def __init__(self, values: np.ndarray, grid: RegularGrid, scale: np.ndarray,
                 mc: ModelConfig, tc: TrainConfig) -> None:
        self.values = values
        self.grid = grid
        s, nv, ny, nx = values.shape
        self.S, self.V, self.ny, self.nx = s, nv, ny, nx
        self.ctx = build_context(values, grid, scale, mc.patch)
        self.k = tc.selfsup_factor
        self.sub: list[tuple[int, int, Context]] = []
        if self.k >= 2 and ny // self.k >= 4 and nx // self.k >= 4:
            for oy in range(self.k):
                for ox in range(self.k):
                    g = grid.subsample(self.k, oy, ox)
                    periodic = grid.periodic and nx % self.k == 0
                    if g.ny < 4 or g.nx < 4:
                        continue
                    sub = values[:, :, oy::self.k, ox::self.k]
                    self.sub.append((oy, ox, build_context(sub, g, scale, mc.patch, periodic)))
        self.vals_t = torch.as_tensor(values, dtype=torch.float32)

    def multiscale_batch(self, gen: torch.Generator, cells: int) -> tuple[Any, ...]:
        oy, ox, ctx = self.sub[int(torch.randint(len(self.sub), (1,), generator=gen))]
        _, ny2, nx2 = ctx.shape
        k = self.k
        s = torch.randint(self.S, (cells,), generator=gen)
        cy = torch.randint(ny2 - 1, (cells,), generator=gen)
        cx = torch.randint(nx2 if ctx.periodic else nx2 - 1, (cells,), generator=gen)
        a = torch.arange(k).repeat_interleave(k)
        b = torch.arange(k).repeat(k)
        yy = oy + k * cy[:, None] + a
        xx = torch.remainder(ox + k * cx[:, None] + b, self.nx)
        target = self.vals_t[s[:, None], :, yy, xx]  # [B, M, V]
        iy = (cy[:, None] + a / k).float()
        ix = (cx[:, None] + b / k).float()
        return ctx, s, cy, cx, iy, ix, target

    def node_batch(self, gen: torch.Generator, cells: int) -> tuple[Any, ...]:
        s = torch.randint(self.S, (cells,), generator=gen)
        cy = torch.randint(self.ny - 1, (cells,), generator=gen)
        cx = torch.randint(self.nx if self.ctx.periodic else self.nx - 1, (cells,),
                           generator=gen)
        a = torch.tensor([0, 0, 1, 1])
        b = torch.tensor([0, 1, 0, 1])
        yy = cy[:, None] + a
        xx = torch.remainder(cx[:, None] + b, self.nx)
        target = self.vals_t[s[:, None], :, yy, xx]
        return self.ctx, s, cy, cx, yy.float(), (cx[:, None] + b).float(), target

    def collocation(self, gen: torch.Generator, cells: int, points: int, lat_band: tuple,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                               torch.Tensor]:
        g = self.grid
        lat = torch.as_tensor(g.lat, dtype=torch.float32)
        ok = torch.nonzero((lat[:-1].abs() >= lat_band[0]) & (lat[1:].abs() >= lat_band[0])
                           & (lat[:-1].abs() <= lat_band[1]) & (lat[1:].abs() <= lat_band[1])
                           )[:, 0]
        if ok.numel() == 0:
            raise DataError(f"no grid cells within the equations' latitude band {lat_band}")
        s = torch.randint(self.S, (cells,), generator=gen)
        cy = ok[torch.randint(ok.numel(), (cells,), generator=gen)]
        cx = torch.randint(self.nx if self.ctx.periodic else self.nx - 1, (cells,),
                           generator=gen)
        fy = torch.rand(cells, points, generator=gen)
        fx = torch.rand(cells, points, generator=gen)
        lat_p = g.lat0 + (cy[:, None] + fy) * g.dlat
        lon_p = g.lon0 + (cx[:, None] + fx) * g.dlon
        return s, cy, cx, lat_p, lon_p


def _normalised_mse(pred: torch.Tensor, target: torch.Tensor, norm: torch.Tensor
                    ) -> torch.Tensor:
    return (((pred - target) ** 2).mean(dim=(0, 1)) / norm).mean()


def pde_residuals(net: FieldNet | None, ctx: Context, variables: Sequence[str],
                  equations: Sequence[Equation], s: torch.Tensor, cy: torch.Tensor,
                  cx: torch.Tensor, lat: torch.Tensor, lon: torch.Tensor, base: str,
                  ) -> dict[str, torch.Tensor]:
    """Residuals (SI units, latitude-band weights applied) at collocation points via autograd.

    ``net=None`` evaluates the interpolation alone (the zero-residual model).
    """
    lat = lat.detach().clone().requires_grad_(True)
    lon = lon.detach().clone().requires_grad_(True)
    iy, ix = to_index(ctx, lat, lon)
    if net is None:
        from cropscope.weather.interp import sample_grid

        b, m = lat.shape
        out = (sample_grid(ctx.values, s.repeat_interleave(m), iy.reshape(-1), ix.reshape(-1),
                           base, ctx.periodic) + ctx.means[s.repeat_interleave(m)])
        out = out.reshape(b, m, -1)
    else:
        out = predict_cells(net, ctx, s, cy, cx, iy, ix, base)
    state = PointState({v: out[..., i].reshape(-1) for i, v in enumerate(variables)},
                       lat, lon)
    res = {}
    for eq in equations:
        w = eq.weight(state.lat)
        for name, r in eq.residual(state).items():
            res[f"{eq.name}.{name}"] = r * w
    return res


def _lat_band(equations: Sequence[Equation]) -> tuple[float, float]:
    return (min(e.min_abs_lat for e in equations), max(e.max_abs_lat for e in equations))


def _rms(res: dict[str, torch.Tensor]) -> dict[str, float]:
    out: dict[str, list[torch.Tensor]] = {}
    for key, r in res.items():
        out.setdefault(key.split(".")[0], []).append(r.detach())
    return {k: float(torch.sqrt(torch.cat(v) .pow(2).mean())) for k, v in out.items()}


# ---------------------------------------------------------------------------- checkpoints
def _save_checkpoint(out_dir: Path, net: FieldNet, opt: torch.optim.Optimizer,
                     values: np.ndarray, meta: dict[str, Any], gen: torch.Generator) -> None:
    from safetensors.torch import save_file

    from cropscope.io import atomic_path

    tensors = {"rng": gen.get_state()}
    for i, st in enumerate(opt.state.values()):
        for k, v in st.items():
            tensors[f"{i}.{k}"] = torch.as_tensor(v).detach().clone().contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / OPTIMIZER) as tmp:
        save_file(tensors, str(tmp))
    save_field_files(out_dir, net, values, meta)


def _load_checkpoint(out_dir: Path, net: FieldNet, opt: torch.optim.Optimizer,
                     gen: torch.Generator) -> dict[str, Any]:
    from safetensors.torch import load_file

    meta = json.loads((out_dir / FIELD_JSON).read_text())
    net.load_state_dict(load_file(out_dir / "model.safetensors"))
    tensors = load_file(out_dir / OPTIMIZER)
    gen.set_state(tensors.pop("rng"))
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        keys = [k for k in tensors if k.split(".", 1)[0] == str(i)]
        if keys:
            opt.state[p] = {k.split(".", 1)[1]: tensors[k] for k in keys}
    return meta


# ---------------------------------------------------------------------------- fit
def fit_field(values: np.ndarray, grid: RegularGrid, variables: Sequence[str],
              slices: Sequence[dict[str, Any]] | None = None,
              config: dict[str, Any] | None = None, out_dir: str | Path | None = None,
              resume: bool = False, progress: bool = False) -> WeatherField:
    """Fit a field to ``values [S, V, ny, nx]`` (slices × variables on ``grid``).

    ``config`` mixes :class:`ModelConfig` and :class:`TrainConfig` keys. Returns the fitted
    :class:`WeatherField`; ``field.info['history']`` holds losses and residual statistics.
    """
    mc, tc = _split_config(config)
    values = np.asarray(values, np.float64)
    if values.ndim != 4 or values.shape[1] != len(variables):
        raise DataError(f"values must be [S, V={len(variables)}, ny, nx], got {values.shape}")
    slices = list(slices) if slices is not None else [{"slice": i} for i in range(len(values))]
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)
    scale = roughness_scale(values, grid.periodic)
    net = FieldNet(len(variables), mc)
    sampler = _Sampler(values, grid, scale, mc, tc)
    equations = get_equations(tc.equations, variables)
    equations = [e for e in equations if tc.pde_weight(e.name) > 0]
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    out_dir = Path(out_dir) if out_dir is not None else None
    history: dict[str, Any] = {"loss": []}
    start = 0
    started = time.perf_counter()

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / 20)
        return tc.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / tc.steps)))

    # normalisers: base-interpolation errors (multi-scale) and roughness (nodes)
    eval_gen = torch.Generator().manual_seed(tc.seed + 1)
    ms_norm = torch.ones(len(variables))
    if sampler.sub and tc.w_multiscale > 0:
        errs = []
        for _ in range(8):
            ctx, s, cy, cx, iy, ix, tgt = sampler.multiscale_batch(eval_gen, 256)
            with torch.no_grad():
                from cropscope.weather.interp import sample_grid

                m = iy.shape[1]
                base = sample_grid(ctx.values, s.repeat_interleave(m), iy.reshape(-1),
                                   ix.reshape(-1), tc.base, ctx.periodic).reshape(tgt.shape)
                errs.append(((base + ctx.means[s][:, None] - tgt) ** 2).mean(dim=(0, 1)))
        ms_norm = torch.stack(errs).mean(0).clamp_min(1e-12)
    node_norm = torch.as_tensor(scale**2, dtype=torch.float32)
    pde_eval = None
    pde_norm: dict[str, float] = {}
    if equations:
        n_cells = max(1, tc.eval_points // tc.pde_points)
        pde_gen = torch.Generator().manual_seed(tc.seed + 2)
        pde_eval = sampler.collocation(pde_gen, n_cells, tc.pde_points, _lat_band(equations))
        before = pde_residuals(None, sampler.ctx, variables, equations, *pde_eval, tc.base)
        history["pde_rms_before"] = _rms(before)
        pde_norm = {e.name: max(history["pde_rms_before"][e.name] ** 2, 1e-30)
                    for e in equations}

    if out_dir is not None:
        from cropscope.io import write_json
        from cropscope.runs import RUN_FILE, begin_run

        begin_run(out_dir)  # not a loadable field until the fit finishes
        write_json(out_dir / RUN_FILE, _field_spec(variables, tc).to_dict())
    if resume and out_dir is not None and (out_dir / FIELD_JSON).is_file() \
            and (out_dir / OPTIMIZER).is_file():
        meta = _load_checkpoint(out_dir, net, opt, gen)
        start = int(meta["info"]["step"])
        history = meta["info"].get("history", history)
        if progress:
            print(f"resuming from step {start}", file=sys.stderr)

    def info(step: int) -> dict[str, Any]:
        return {"step": step, "train_config": asdict(tc), "history": history,
                "equations": [e.name for e in equations],
                "fit_seconds": round(time.perf_counter() - started, 2)}

    def field_meta(step: int) -> dict[str, Any]:
        f = WeatherField.__new__(WeatherField)
        f.net, f.values, f.grid, f.variables = net, values, grid, list(variables)
        f.slices, f.scale, f.base, f.info = list(slices), scale, tc.base, info(step)
        return f.state()

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.steps, initial=start, desc="fit", file=sys.stderr, leave=False)
    net.train()
    for step in range(start, tc.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = torch.zeros(())
        parts: dict[str, float] = {}
        if sampler.sub and tc.w_multiscale > 0:
            ctx, s, cy, cx, iy, ix, tgt = sampler.multiscale_batch(gen, tc.cells)
            pred = predict_cells(net, ctx, s, cy, cx, iy, ix, tc.base)
            term = _normalised_mse(pred, tgt, ms_norm)
            loss = loss + tc.w_multiscale * term
            parts["multiscale"] = float(term.detach())
        if tc.w_nodes > 0:
            ctx, s, cy, cx, iy, ix, tgt = sampler.node_batch(gen, tc.node_cells)
            pred = predict_cells(net, ctx, s, cy, cx, iy, ix, tc.base)
            term = _normalised_mse(pred, tgt, node_norm)
            loss = loss + tc.w_nodes * term
            parts["nodes"] = float(term.detach())
        if equations and step >= tc.warmup:
            batch = sampler.collocation(gen, tc.pde_cells, tc.pde_points, _lat_band(equations))
            res = pde_residuals(net, sampler.ctx, variables, equations, *batch, tc.base)
            for eq in equations:
                r = torch.cat([v for k, v in res.items() if k.split(".")[0] == eq.name])
                term = r.pow(2).mean() / pde_norm[eq.name]
                loss = loss + tc.pde_weight(eq.name) * term
                parts[eq.name] = float(term.detach())
        if not loss.requires_grad:
            raise ModelError("every loss weight is zero: nothing to fit")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
        opt.step()
        if step % 10 == 0 or step == tc.steps - 1:
            history["loss"].append({"step": step, "total": float(loss.detach()), **parts})
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in parts.items()})
        if out_dir is not None and tc.checkpoint_every and (step + 1) % tc.checkpoint_every == 0:
            _save_checkpoint(out_dir, net, opt, values, field_meta(step + 1), gen)
    if bar is not None:
        bar.close()
    net.eval()
    if pde_eval is not None:
        after = pde_residuals(net, sampler.ctx, variables, equations, *pde_eval, tc.base)
        history["pde_rms_after"] = _rms(after)
    history["fit_seconds"] = round(time.perf_counter() - started, 2)
    field_obj = WeatherField(net, values, grid, variables, slices, scale, tc.base,
                             info(tc.steps))
    if out_dir is not None:
        _save_checkpoint(out_dir, net, opt, values, field_obj.state(), gen)
        _finish_field_run(out_dir, variables, tc)
    return field_obj


def _field_spec(variables: Sequence[str], tc: TrainConfig) -> Any:
    """The ``run.json`` of a weather field (kind ``weather-field``)."""
    from cropscope.models.runs import package_versions
    from cropscope.runs import RunSpec

    return RunSpec(kind="weather-field", sources={"field": {"bands": list(variables),
                                                             "wavelengths": None}},
                   training={"config": json.loads(json.dumps(asdict(tc), default=str))},
                   versions=package_versions(), extra={"field": FIELD_JSON})


def _finish_field_run(out_dir: Path, variables: Sequence[str], tc: TrainConfig) -> None:
    """``run.json`` and the manifest: the field is complete."""
    from cropscope.runs import finish_run

    finish_run(out_dir, _field_spec(variables, tc))
