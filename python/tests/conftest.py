"""Shared fixtures: ../shared (skipped loudly locally, an error in CI) and the atrous CLI binary
whose outputs the package must reproduce."""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CI = os.environ.get("CI") == "true"


def _need(what: str):
    if CI:
        pytest.fail(f"CI=true but {what}")
    pytest.skip(f"SKIPPED LOUDLY: {what}")


@pytest.fixture(scope="session")
def shared() -> pathlib.Path:
    p = pathlib.Path(os.environ.get("ATROUS_SHARED", ROOT.parent / "shared"))
    if not (p / "models").is_dir():
        _need(f"{p} (the shared test data) is missing")
    return p


@pytest.fixture(scope="session")
def cli() -> pathlib.Path:
    """The atrous binary: $ATROUS_BIN, else target/release or target/debug (built if neither)."""
    env = os.environ.get("ATROUS_BIN")
    if env:
        return pathlib.Path(env)
    for d in ("release", "debug"):
        p = ROOT / "target" / d / "atrous"
        if p.exists():
            return p
    subprocess.run(["cargo", "build", "--release", "--bin", "atrous"], cwd=ROOT, check=True)
    return ROOT / "target" / "release" / "atrous"


@pytest.fixture(scope="session")
def camvid(shared) -> list:
    files = sorted((shared / "data/camvid/val/images").glob("*.png"))
    assert len(files) == 101
    return files


@pytest.fixture(scope="session")
def cli_maps(cli, shared, camvid, tmp_path_factory):
    """The CLI's class maps of the first 20 CamVid val frames (espnet_camvid)."""
    import numpy as np
    from PIL import Image

    out = tmp_path_factory.mktemp("cli")
    files = camvid[:20]
    subprocess.run([str(cli), "segment", "--model", str(shared / "models/espnet_camvid.safetensors"), *map(str, files), "--out", str(out)], check=True, capture_output=True)
    return {f.stem: np.array(Image.open(out / (f.stem + ".png"))) for f in files}
