"""The Python package: results equal the CLI's, every exception type for bad input, two threads
each owning a session, and the array conventions."""

import threading

import numpy as np
import pytest

import atrous


@pytest.fixture(scope="module")
def model(shared):
    return atrous.Model(shared / "models/espnet_camvid.safetensors")


def test_model_description(model):
    assert model.classes[0] == "sky" and len(model.classes) == 12
    assert len(model.palette) >= 12 and all(len(c) == 3 for c in model.palette)
    assert model.size_rule == ("multiple_of", 8)
    assert model.input_size(360, 480) == (360, 480)
    assert model.input_size(97, 131) == (96, 128)
    assert model.parameters > 300_000


def test_segment_equals_the_cli(model, camvid, cli_maps):
    s = model.session()
    for f in camvid[:20]:
        got = s.segment(atrous.load_image(f))
        assert got.dtype == np.uint8 and got.shape == (360, 480)
        assert np.array_equal(got, cli_maps[f.stem]), f.name


def test_segment_batch_equals_the_cli(model, camvid, cli_maps):
    s = model.session()
    maps = s.segment_batch([atrous.load_image(f) for f in camvid[:20]])
    for f, m in zip(camvid[:20], maps):
        assert np.array_equal(m, cli_maps[f.stem]), f.name


def test_pillow_images_and_odd_sizes(model, camvid):
    from PIL import Image

    s = model.session()
    img = Image.open(camvid[0]).crop((0, 0, 131, 97))
    a = s.segment(img)
    assert a.shape == (97, 131)
    assert np.array_equal(a, s.segment(np.asarray(img)))


def test_logits_and_probabilities(model, camvid):
    s = model.session()
    img = atrous.load_image(camvid[0])
    m, logits = s.logits(img)
    assert logits.shape == (12, 360, 480) and logits.dtype == np.float32
    assert np.array_equal(m, logits.argmax(0).astype(np.uint8))
    m2, p = s.probabilities(img)
    assert np.array_equal(m, m2)
    assert np.allclose(p.sum(0), 1.0, atol=1e-5)
    assert np.array_equal(p.argmax(0).astype(np.uint8), m)


def test_every_exception_type(model, shared, tmp_path):
    with pytest.raises(atrous.ModelError):
        atrous.Model(tmp_path / "missing.safetensors")
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(atrous.ModelError):
        atrous.Model(bad)
    s = model.session()
    with pytest.raises(atrous.ImageError):
        s.segment(np.zeros((8, 8), np.uint8))
    with pytest.raises(atrous.ImageError):
        s.segment(np.zeros((8, 8, 3), np.float32))
    notimg = tmp_path / "x.png"
    notimg.write_bytes(b"\x89PNG\r\n\x1a\nnope")
    with pytest.raises(atrous.ImageError):
        atrous.load_image(notimg)
    with pytest.raises(atrous.ImageError):
        model.session(size=(100, 100))  # not a multiple of 8
    with pytest.raises(atrous.DeviceError):
        model.session(device="no adapter is called this")
    for e in (atrous.ModelError, atrous.ImageError, atrous.DeviceError):
        assert issubclass(e, atrous.AtrousError)


def test_two_threads_each_with_a_session(model, camvid):
    imgs = [atrous.load_image(f) for f in camvid[:6]]
    want = [model.session().segment(i) for i in imgs[:3]]
    results, errors = {}, []

    def work(k):
        try:
            s = model.session()
            results[k] = [s.segment(i) for i in imgs[:3]]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
    assert not errors, errors
    for k in range(2):
        for a, b in zip(results[k], want):
            assert np.array_equal(a, b)


def test_other_architectures(shared):
    # a binary (sigmoid) model and a fixed-size one
    unet = atrous.Model(shared / "models/unet_rbm.safetensors")
    assert unet.classes == ["background", "brain"]
    img = atrous.load_image(shared / "data/voc/images/vainf_23.png")[:128, :128]
    m, p = unet.session().probabilities(img)
    assert p.shape == (1, 128, 128) and set(np.unique(m)) <= {0, 1}
    assert np.array_equal(m, (p[0] > 0.5).astype(np.uint8))
    dl = atrous.Model(shared / "models/deeplabv3_mnv2_voc257.safetensors")
    assert dl.size_rule == ("fixed", (257, 257))
    assert dl.session().segment(img).shape == (128, 128)


def test_palette_png_round_trip(model, tmp_path):
    from PIL import Image

    m = np.arange(12, dtype=np.uint8).repeat(10).reshape(12, 10)
    atrous.save_palette_png(tmp_path / "m.png", m, model.palette)
    assert np.array_equal(np.array(Image.open(tmp_path / "m.png")), m)


def test_half_precision_and_the_built_in_model(model, camvid, cli_maps):
    # f16 storage agrees with the f32 class maps on nearly every pixel
    s = model.session(precision="f16")
    for f in camvid[:3]:
        got = s.segment(atrous.load_image(f))
        assert (got == cli_maps[f.stem]).mean() >= 0.995, f.name
    with pytest.raises(atrous.AtrousError):
        model.session(precision="f8")
    # the built-in DeepLabV3-MobileNetV2 (VOC) loads without a file or a download
    m = atrous.Model("deeplabv3-mnv2-voc")
    assert len(m.classes) == 21 and m.classes[15] == "person"


def test_dense_crf_session(model, shared, camvid, cli, tmp_path):
    # the same class map as `atrous segment --crf deeplab`, and the marginals as probabilities
    import subprocess

    from PIL import Image

    s = model.session(crf="deeplab")
    img = atrous.load_image(camvid[0])
    got = s.segment(img)
    subprocess.run([str(cli), "segment", "--crf", "deeplab", "--model", str(shared / "models/espnet_camvid.safetensors"), str(camvid[0]), "--out", str(tmp_path)], check=True, capture_output=True)
    assert np.array_equal(got, np.array(Image.open(tmp_path / (camvid[0].stem + ".png"))))
    m, q = s.probabilities(img)
    assert np.array_equal(m, got) and np.allclose(q.sum(0), 1.0, atol=1e-5)
    with pytest.raises(atrous.AtrousError):
        model.session(crf="w1=x")
