"""How far cropscope's own conventions are from the official AgriFM / H2Crop code, measured.

For every case of ``../shared/data/official_reference`` (official inputs, weights and
outputs), the network is loaded from the official checkpoint and run with
``compat="official"`` and then with each of cropscope's own conventions switched back on, one
at a time, and all together:

- ``index``: a clipped window re-indexes the relative-position table for its own size (the
  official code cuts the full window's index to ``[:N, :N]``);
- ``padding``: odd sizes repeat the last frame/row/column in the stem and the merges (the
  official code pads with zeros);
- ``decoder``: the decoder is seeded at the deepest grid and follows the skip grids (the
  official neck starts at ``feature_size`` and doubles per step).

Printed: max relative error of the logits (finest level for H2Crop) against the official
ones, ``max|ours - official| / max|official|``. One thread (the official outputs were made
on one). Never asserts; ``tests/models/test_official_*.py`` hold the 1e-5 checks.

    python benchmarks/official_parity.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/data/official_reference"

VARIANTS = ("official", "index", "padding", "decoder", "all cropscope")


def _set(model: torch.nn.Module, variant: str) -> None:
    from cropscope.models.agrifm import AgriFM
    from cropscope.models.swin3d import PatchEmbed3D, PatchMerging3D, WindowAttention3D

    for sub in model.modules():
        if isinstance(sub, WindowAttention3D):
            sub.official = variant not in ("index", "all cropscope")
        if isinstance(sub, PatchMerging3D | PatchEmbed3D):
            sub.official = variant not in ("padding", "all cropscope")
        if isinstance(sub, AgriFM):
            sub.compat = "cropscope" if variant in ("decoder", "all cropscope") else "official"


def _rel(out: torch.Tensor, ref: torch.Tensor) -> str:
    if tuple(out.shape) != tuple(ref.shape):
        return "shape"
    return f"{float((out - ref).abs().max() / ref.abs().max()):.1e}"


def main() -> None:
    from safetensors import safe_open

    from cropscope.models.agrifm import AgriFM
    from cropscope.models.agrifm_checkpoint import load_agrifm_checkpoint
    from cropscope.models.h2crop import H2CropNet
    from cropscope.models.h2crop_checkpoint import load_h2crop_checkpoint

    torch.set_num_threads(1)
    # the small official configurations, as cropscope options (configs.json)
    configs = json.loads((DATA / "configs.json").read_text())
    agrifm = {k: v for k, v in configs["agrifm_small"]["cropscope_equivalent"].items()
              if k not in ("note", "num_classes")}
    agrifm.update(preset=None, compat="official")
    h2crop = {k: v for k, v in configs["h2crop_small"]["cropscope_equivalent"].items()
              if k != "note"}
    h2crop.update(temporal="flatten", compat="official")
    rows = []
    for path in sorted(DATA.glob("*_case_*.safetensors")):
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            stored = {k: f.get_tensor(k) for k in f.keys()}
        fs = json.loads(meta["neck.feature_size"])
        x = stored["input.S2"].float()
        if path.name.startswith("agrifm"):
            model: torch.nn.Module = AgriFM({"S2": 10}, 2, num_frames=int(x.shape[1]),
                                            feature_size=fs, **agrifm)
            load_agrifm_checkpoint(model, DATA / "agrifm_small_state_dict.safetensors")
            inputs = {"S2": x}
            ref = stored["logits"]
        else:
            config = meta["config"]
            model = H2CropNet(config=config, s2_bands=10,
                              hyper_bands=None if config == "S2" else 218, feature_size=fs,
                              **h2crop)
            name = ("h2crop_small_S2only_state_dict.safetensors" if config == "S2"
                    else "h2crop_small_state_dict.safetensors")
            load_h2crop_checkpoint(model, DATA / name)
            inputs = {"S2": x}
            if config != "S2":
                inputs["EnMAP"] = stored["input.EnMAP"].float()
                inputs["priors"] = torch.stack([stored[f"input.priors.level{k}"]
                                                for k in range(1, 5)], dim=1)
            ref = stored["logits.level4"]
        model.eval()
        row = [meta["case"]]
        for variant in VARIANTS:
            _set(model, variant)
            with torch.no_grad():
                out = model(inputs)
            row.append(_rel(out[-1] if isinstance(out, list) else out, ref))
        rows.append(row)
    print("max relative error of the logits against the official code (1 thread)")
    print(f"{'case':<24}" + "".join(f"{v:>15}" for v in VARIANTS))
    for row in rows:
        print(f"{row[0]:<24}" + "".join(f"{c:>15}" for c in row[1:]))
    print("(official: compat='official'; index / padding / decoder: that one cropscope "
          "convention on; shape: the output grid differs)")


if __name__ == "__main__":
    main()
