"""Ray Data, locally: 20 CamVid val frames through `atrous.ray.segment` with 2 actors equal the
CLI's class maps, and the example script writes the same PNGs."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import CI, ROOT

ray = pytest.importorskip("ray") if not CI else __import__("ray")

import atrous  # noqa: E402
import atrous.ray  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_segment_equals_the_cli(local_ray, shared, camvid, cli_maps):
    files = camvid[:20]
    ds = ray.data.from_items([{"path": str(f)} for f in files])
    ds = atrous.ray.segment(ds, model=str(shared / "models/espnet_camvid.safetensors"), concurrency=2, batch_size=4)
    rows = list(ds.iter_rows())
    assert len(rows) == 20
    for r in rows:
        stem = r["path"].rsplit("/", 1)[1][:-4]
        assert np.array_equal(np.asarray(r["classes"]), cli_maps[stem]), stem


def test_ray_example_writes_the_cli_pngs(shared, camvid, cli_maps, tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples/ray_segment.py"), "--model", str(shared / "models/espnet_camvid.safetensors"), "--images", str(shared / "data/camvid/val/images"), "--out", str(out), "--actors", "2", "--cpus", "2", "--limit", "20"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    print(r.stdout.strip().splitlines()[-1])
    for f in camvid[:20]:
        assert np.array_equal(np.array(Image.open(out / (f.stem + ".png"))), cli_maps[f.stem]), f.name
