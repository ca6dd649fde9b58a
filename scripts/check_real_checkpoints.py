"""Check the checkpoint readers against files that the public StyleGAN2 implementations write themselves (run by hand, outside CI).

    python scripts/check_real_checkpoints.py --stylegan2-ada-pytorch DIR --stylegan3 DIR --rosinality DIR

Each DIR is a local checkout of github.com/NVlabs/stylegan2-ada-pytorch, NVlabs/stylegan3 or
rosinality/stylegan2-pytorch (any subset may be given). For each, a child process with the
checkout on ``sys.path`` builds small networks with that code (CPU, its reference ops), gives every
weight a random value (as training leaves them: no zero biases or noise strengths), saves them the
way its training loop saves snapshots (``pickle.dump`` of the snapshot dict; rosinality's
``torch.save`` of train.py's and convert_weight.py's dicts), and runs its own forward pass with
fixed noise on random z and on random w+ (a different w per layer, so a wrong layer order shows).
This process then loads each file with ``bp.load_generator`` and prints the largest absolute
difference of the mapping and of ``G.synthesis`` (target <= 1e-4 in fp32), what the loader
recognised, and whether the test fixtures of ``tests/foreign_files/`` reproduce the real
file's structure (globals, records, attributes, key names). StyleGAN3 networks and StyleGAN2 with
the 'orig' and 'resnet' architectures must be refused; their messages are printed.

Nothing of the checkouts is modified; two shims apply inside the child process only: an empty
``requests`` module when it is not installed (NVIDIA's ``dnnlib/util.py`` imports it for
downloads), and, for rosinality, ``torch.utils.cpp_extension.load`` returning None (its ``op/``
package compiles CUDA kernels at import; on CPU its own native code paths run instead).
NVIDIA's TensorFlow pickles are not covered: writing them needs TensorFlow 1.x (Python <= 3.7).

Exit status: 0 when every check passes, 1 when one fails, 2 when nothing was given to check (a run
that checked nothing must not read as a pass) or for a path that is not the checkout it is given as.
"""

from __future__ import annotations

import argparse
import copy
import os
import pickle
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import torch

TOLERANCE = 1e-4
REPOSITORIES = {
    "stylegan2_ada_pytorch": ("NVlabs/stylegan2-ada-pytorch", "training/networks.py"),
    "stylegan3": ("NVlabs/stylegan3", "training/networks_stylegan3.py"),
    "rosinality": ("rosinality/stylegan2-pytorch", "model.py"),
}
BATCH = 3


# ----------------------------------------------------------------------------- child: the real code


def _randomise(module: torch.nn.Module, seed: int, keep: tuple[str, ...]) -> None:
    """Every parameter and buffer random except the fixed filters ``keep`` names."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not name.endswith(keep) and tensor.is_floating_point():
                tensor.add_(0.2 * torch.randn(tensor.shape, generator=gen))


def _inputs(z_dim: int, num_ws: int, w_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return torch.randn(BATCH, z_dim, generator=gen), torch.randn(BATCH, num_ws, w_dim, generator=gen)


def _nvidia_snapshot(
    out: Path,
    name: str,
    layout: str,
    generator: dict,
    channels: int,
    stylegan3: bool = False,
    supported: bool = True,
) -> None:
    """Build with NVIDIA's code, save the snapshot as its training_loop.py does, run its forward pass if supported."""
    import dnnlib

    common = {"c_dim": 0, "img_resolution": 32, "img_channels": channels}
    G = dnnlib.util.construct_class_by_name(**generator, **common)
    D = None
    if not stylegan3:
        module = "training.networks" if layout == "ada" else "training.networks_stylegan2"
        D = dnnlib.util.construct_class_by_name(
            class_name=f"{module}.Discriminator", channel_base=1024, channel_max=64, **common
        )
    augment_pipe = dnnlib.util.construct_class_by_name(
        class_name="training.augment.AugmentPipe", xflip=1, rotate90=1, xint=1, brightness=1, contrast=1
    )
    G_ema = copy.deepcopy(G).eval()
    _randomise(G_ema, 1, ("resample_filter", "up_filter", "down_filter", "transform"))
    modules = {"G": G, "D": D, "G_ema": G_ema, "augment_pipe": augment_pipe}
    if layout == "ada":
        snapshot = {
            "training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "path": "data.zip"}
        }
        for key, module in modules.items():
            snapshot[key] = (
                copy.deepcopy(module).eval().requires_grad_(False).cpu() if module is not None else None
            )
    else:
        snapshot = {**modules, "training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset"}}
        for key, value in snapshot.items():
            if isinstance(value, torch.nn.Module):
                snapshot[key] = copy.deepcopy(value).eval().requires_grad_(False).cpu()
    with open(out / f"{name}.pkl", "wb") as handle:
        pickle.dump(snapshot, handle)
    if not supported:
        return
    z, ws = _inputs(G_ema.z_dim, G_ema.num_ws, G_ema.w_dim)
    with torch.no_grad():
        mapped = G_ema.mapping(z, None)
        img = G_ema.synthesis(ws, noise_mode="const", force_fp32=True)
    torch.save({"z": z, "mapping": mapped, "ws": ws, "synthesis": img}, out / f"{name}.reference.pt")


def _child_nvidia(kind: str, out: Path) -> None:
    from dnnlib import EasyDict

    def generator(class_name: str, **settings: Any) -> EasyDict:
        """Generator kwargs as train.py builds them (class name, latent sizes, mapping depth, settings)."""
        return EasyDict(
            class_name=class_name, z_dim=64, w_dim=64, mapping_kwargs=EasyDict(num_layers=2), **settings
        )

    if kind == "stylegan2_ada_pytorch":
        # train.py's layout: synthesis settings nested under synthesis_kwargs; --fp32 (no fp16, no clamp).
        synthesis = EasyDict(channel_base=2048, channel_max=128, num_fp16_res=0, conv_clamp=None)
        kwargs = generator("training.networks.Generator", synthesis_kwargs=synthesis)
        _nvidia_snapshot(out, "stylegan2-ada-pytorch", "ada", kwargs, channels=1)
        return
    # stylegan3's train.py with --cfg=stylegan2: settings at the top level, fp16 on 4 resolutions, clamp 256.
    settings = dict(
        channel_base=2048, channel_max=128, fused_modconv_default="inference_only", num_fp16_res=4
    )
    for architecture in ("skip", "orig", "resnet"):
        kwargs = generator("training.networks_stylegan2.Generator", **settings, conv_clamp=256)
        if architecture != "skip":
            kwargs.architecture = architecture
        name = f"stylegan3-stylegan2-{architecture}"
        _nvidia_snapshot(out, name, "stylegan3", kwargs, channels=3, supported=architecture == "skip")
    # --cfg=stylegan3-t
    kwargs = generator(
        "training.networks_stylegan3.Generator", channel_base=1024, channel_max=64, magnitude_ema_beta=0.999
    )
    _nvidia_snapshot(
        out, "stylegan3-stylegan3-t", "stylegan3", kwargs, channels=3, stylegan3=True, supported=False
    )


def _child_rosinality(out: Path) -> None:
    from model import Discriminator, Generator

    size, style_dim, n_mlp, channel_multiplier = 32, 64, 2, 1
    generator = Generator(size, style_dim, n_mlp, channel_multiplier=channel_multiplier)
    discriminator = Discriminator(size, channel_multiplier=channel_multiplier)
    g_ema = Generator(size, style_dim, n_mlp, channel_multiplier=channel_multiplier).eval()
    g_ema.load_state_dict(generator.state_dict())
    _randomise(g_ema, 1, ("kernel",))
    g_reg_ratio, d_reg_ratio = 4 / 5, 16 / 17
    g_optim = torch.optim.Adam(
        generator.parameters(), lr=0.002 * g_reg_ratio, betas=(0**g_reg_ratio, 0.99**g_reg_ratio)
    )
    d_optim = torch.optim.Adam(
        discriminator.parameters(), lr=0.002 * d_reg_ratio, betas=(0**d_reg_ratio, 0.99**d_reg_ratio)
    )
    # train.py's parsed command line (its defaults), then the attributes it sets itself
    options = dict(
        path="lmdb", arch="stylegan2", iter=800000, batch=16, n_sample=64, r1=10, path_regularize=2
    )
    options.update(
        path_batch_shrink=2, d_reg_every=16, g_reg_every=4, mixing=0.9, ckpt=None, lr=0.002, wandb=False
    )
    options.update(local_rank=0, augment=False, augment_p=0, ada_target=0.6, ada_length=500000, ada_every=256)
    options.update(
        size=size, channel_multiplier=channel_multiplier, latent=style_dim, n_mlp=n_mlp, start_iter=0
    )
    args = argparse.Namespace(**options, distributed=False)
    # train.py's checkpoint, key for key
    torch.save(
        {
            "g": generator.state_dict(),
            "d": discriminator.state_dict(),
            "g_ema": g_ema.state_dict(),
            "g_optim": g_optim.state_dict(),
            "d_optim": d_optim.state_dict(),
            "args": args,
            "ada_aug_p": 0.0,
        },
        out / "rosinality-train.pt",
    )
    with torch.no_grad():
        latent_avg = g_ema.mean_latent(4096)[0]
    # convert_weight.py's output: the state dict and the average w
    torch.save({"g_ema": g_ema.state_dict(), "latent_avg": latent_avg}, out / "rosinality-convert_weight.pt")
    z, ws = _inputs(style_dim, g_ema.n_latent, style_dim)
    with torch.no_grad():
        mapped = g_ema.style(z)[:, None].expand(-1, g_ema.n_latent, -1)
        img, _ = g_ema([ws], input_is_latent=True, randomize_noise=False)
    for name in ("rosinality-train", "rosinality-convert_weight"):
        torch.save({"z": z, "mapping": mapped, "ws": ws, "synthesis": img}, out / f"{name}.reference.pt")


def child(kind: str, checkout: Path, out: Path) -> None:
    """Runs in a fresh process: the real code of ``kind`` writes its files and references into ``out``."""
    try:
        import requests  # noqa: F401
    except ImportError:
        sys.modules["requests"] = types.ModuleType("requests")
    sys.path.insert(0, str(checkout))
    torch.manual_seed(0)  # their initialisation draws from the global generator
    if kind == "rosinality":
        from torch.utils import cpp_extension

        cpp_extension.load = lambda *args, **kwargs: None
        _child_rosinality(out)
    else:
        _child_nvidia(kind, out)


# ----------------------------------------------------------------------------- parent: our loader


def _fixture_module() -> types.ModuleType | None:
    tests = Path(__file__).resolve().parent.parent / "tests"
    if not (tests / "foreign_files" / "__init__.py").is_file():
        return None
    sys.path.insert(0, str(tests))
    import foreign_files

    return foreign_files


def _describe(value: Any) -> str:
    from brgm_pyro.checkpoints.unpickler import PersistentObject

    if isinstance(value, torch.Tensor):
        return f"{type(value).__name__}{tuple(value.shape)}"
    if isinstance(value, PersistentObject):
        return f"<{value.class_name}>"
    if isinstance(value, dict):
        return f"{type(value).__name__}{{" + ", ".join(f"{k}: {_describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}(" + ", ".join(_describe(v) for v in value) + ")"
    return f"{type(value).__name__}:{value!r}"


def _record_differences(real: Any, fixture: Any, prefix: str = "") -> list[str]:
    """Where two networks' records differ: class name, version, state keys, attribute types and values."""
    where = prefix or "G_ema"
    found = []
    if (real.class_name, real.version) != (fixture.class_name, fixture.version):
        found.append(
            f"{where}: record {real.class_name} v{real.version} vs {fixture.class_name} v{fixture.version}"
        )
    if list(real.state) != list(fixture.state):
        found.append(f"{where}: state keys {list(real.state)} vs {list(fixture.state)}")
    for key, value in real.state.items():
        if key != "_modules" and key in fixture.state and _describe(value) != _describe(fixture.state[key]):
            found.append(f"{where}.{key}: {_describe(value)} vs {_describe(fixture.state[key])}")
    for name, module in real.modules.items():
        if name in fixture.modules:
            found += _record_differences(module, fixture.modules[name], f"{prefix}{name}.")
    return found


def _compare_fixture_nvidia(fixtures: types.ModuleType, path: Path, G: Any, layout: str, work: Path) -> str:
    from brgm_pyro.checkpoints.unpickler import unpickle

    real = unpickle(path, "nvidia-pkl")["G_ema"]
    record = fixtures.nvidia_generator(G, real.module_src, layout)
    fixture = unpickle(fixtures.dump({"G_ema": record}, work / "fixture.pkl"), "nvidia-pkl")["G_ema"]
    differences = _record_differences(real, fixture)
    if differences:
        return f"DIFFERS in {len(differences)} places, first: {differences[0]}"
    return "identical to the real G_ema record (every network's state keys, attributes and init kwargs)"


def _compare_fixture_rosinality(fixtures: types.ModuleType, path: Path, G: Any) -> str:
    with torch.serialization.safe_globals([argparse.Namespace]):
        real = torch.load(path, map_location="cpu", weights_only=True)["g_ema"]
    fixture = fixtures.to_rosinality(G)
    shapes = [(k, tuple(v.shape)) for k, v in real.items()]
    if shapes != [(k, tuple(v.shape)) for k, v in fixture.items()]:
        missing = sorted(set(real) ^ set(fixture))
        return f"DIFFERS: key names, order or shapes (symmetric difference {missing[:4]})"
    return f"identical key names, order and shapes ({len(shapes)} tensors of g_ema)"


def _compare(name: str, path: Path, reference: Path, fixtures: types.ModuleType | None, work: Path) -> bool:
    import brgm_pyro as bp

    expected = torch.load(reference, map_location="cpu", weights_only=True)
    G = bp.load_generator(path)
    with torch.no_grad():
        mapping = (G.mapping(expected["z"]) - expected["mapping"]).abs().max().item()
        synthesis = (
            (G.synthesis(expected["ws"], noise_mode="const") - expected["synthesis"]).abs().max().item()
        )
    ok = max(mapping, synthesis) <= TOLERANCE
    print(f"  {name}: {path.stat().st_size} bytes")
    print(f"    recognised: {G.info['recognised']}")
    print(f"    mapping   max |ours - theirs| = {mapping:.2e}")
    print(
        f"    synthesis max |ours - theirs| = {synthesis:.2e}   ({'ok' if ok else 'FAILS'}: target <= {TOLERANCE:g})"
    )
    if fixtures is not None:
        if path.suffix == ".pkl":
            print(f"    pickle globals: {', '.join(fixtures.pickle_globals(path))}")
            layout = "stylegan3" if name.startswith("stylegan3") else "stylegan2-ada-pytorch"
            verdict = _compare_fixture_nvidia(fixtures, path, G, layout, work)
        else:
            verdict = _compare_fixture_rosinality(fixtures, path, G)
        print(f"    test fixture: {verdict}")
        ok &= not verdict.startswith("DIFFERS")
    return ok


def _refused(name: str, path: Path) -> bool:
    import brgm_pyro as bp
    from brgm_pyro.errors import CheckpointError

    try:
        bp.load_generator(path)
    except CheckpointError as err:
        print(f"  {name}: refused, as it must be:\n    {err}")
        return True
    print(f"  {name}: LOADED, but it must be refused")
    return False


def _commit(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown commit"


def check(kind: str, checkout: Path, work: Path, fixtures: types.ModuleType | None) -> bool:
    """Write the files with the real code of ``kind`` in a child process, then load and compare them here."""
    out = work / kind
    out.mkdir()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(checkout), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    repository = REPOSITORIES[kind][0]
    print(f"{repository} ({checkout}, {_commit(checkout)}):")
    if done.returncode != 0:
        print(f"  its code failed to build the networks:\n{done.stderr[-3000:]}")
        return False
    ok = True
    for path in sorted(out.glob("*.p*[lt]")):
        if path.name.endswith(".reference.pt"):
            continue
        name = path.stem
        reference = out / f"{name}.reference.pt"
        if reference.is_file():
            ok &= _compare(name, path, reference, fixtures, work)
        else:
            ok &= _refused(name, path)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for kind, (repository, _) in REPOSITORIES.items():
        parser.add_argument(
            f"--{kind.replace('_', '-')}",
            dest=kind,
            type=Path,
            metavar="DIR",
            help=f"a local checkout of github.com/{repository} (git clone https://github.com/{repository})",
        )
    parser.add_argument("--child", nargs=3, metavar=("KIND", "CHECKOUT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    given = {kind: getattr(args, kind) for kind in REPOSITORIES if getattr(args, kind) is not None}
    if not given:
        needs = ", ".join(
            f"--{k.replace('_', '-')} DIR (git clone https://github.com/{r})"
            for k, (r, _) in REPOSITORIES.items()
        )
        print(
            f"Nothing was checked: give local checkouts of the implementations to compare against: {needs}. "
            "NVIDIA's TensorFlow pickles need TensorFlow 1.x and are not checked here.",
            file=sys.stderr,
        )
        return 2
    for kind, checkout in given.items():
        marker = REPOSITORIES[kind][1]
        if not (checkout / marker).is_file():
            print(
                f"{checkout} is not a checkout of {REPOSITORIES[kind][0]} (it has no {marker}); give its folder.",
                file=sys.stderr,
            )
            return 2
    fixtures = _fixture_module()
    with tempfile.TemporaryDirectory(prefix="check-real-checkpoints-") as tmp:
        results = [check(kind, checkout.resolve(), Path(tmp), fixtures) for kind, checkout in given.items()]
    print("all checks pass" if all(results) else "SOME CHECKS FAIL")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
