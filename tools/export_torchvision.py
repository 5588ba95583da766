#!/usr/bin/env python3
"""Export a torchvision segmentation model to a safetensors file that atrous loads as it is.

    python tools/export_torchvision.py deeplabv3_mobilenet_v3_large out.safetensors
    python tools/export_torchvision.py deeplabv3_resnet50 --checkpoint my_finetune.pth --num-classes 6 out.safetensors

The state_dict keeps torchvision's names and layouts (atrous's builders read them directly; batch
norm is folded at load time in atrous, not here). The auxiliary classifier, which only training
uses, is dropped, and so are `num_batches_tracked` buffers. The metadata says how to normalise
pixels (torchvision's ImageNet mean/std on RGB), the class names and a palette, so
`atrous segment --model out.safetensors image.jpg --out masks` needs no flags.

Needs torch, torchvision and safetensors. Weights come from torchvision's own download
(`--weights DEFAULT`, the default), from `--checkpoint`, or are random (`--weights none`, for tests).
"""
import argparse
import json
import sys

MODELS = ["deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "deeplabv3_resnet101", "lraspp_mobilenet_v3_large"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
VOC = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
       "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def voc_palette(n):
    """The PASCAL VOC bit-interleaved colour map."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append([r, g, b])
    return out


def load_checkpoint(path):
    import torch
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        sys.exit(f"{path}: not a state_dict (got {type(obj).__name__})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=MODELS, help="torchvision.models.segmentation builder")
    ap.add_argument("out", help="output .safetensors path")
    ap.add_argument("--weights", default="DEFAULT", help="torchvision weights enum member (DEFAULT, COCO_WITH_VOC_LABELS_V1) or 'none'")
    ap.add_argument("--checkpoint", help="a .pth state_dict (e.g. fine-tuned) to load instead of torchvision weights")
    ap.add_argument("--num-classes", type=int, default=None, help="classes of the checkpoint (default 21)")
    ap.add_argument("--classes", help="comma-separated class names (default: the weights' categories, or VOC's for 21 classes)")
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    args = ap.parse_args()

    import torch
    import torchvision
    from safetensors.torch import save_file

    builder = getattr(torchvision.models.segmentation, args.model)
    categories = None
    if args.checkpoint or args.weights.lower() == "none":
        num_classes = args.num_classes or 21
        model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
        if args.checkpoint:
            sd = {k: v for k, v in load_checkpoint(args.checkpoint).items() if not k.startswith("aux_classifier.")}
            missing, unexpected = model.load_state_dict(sd, strict=False)
            missing = [k for k in missing if not k.endswith("num_batches_tracked")]
            if missing or unexpected:
                sys.exit(f"{args.checkpoint} does not match {args.model}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        source = args.checkpoint or "random weights"
    else:
        enum = torchvision.models.get_model_weights(args.model)
        weights = enum[args.weights] if args.weights != "DEFAULT" else enum.DEFAULT
        model = builder(weights=weights, aux_loss=None)
        categories = list(weights.meta.get("categories", [])) or None
        num_classes = len(categories) if categories else 21
        source = f"torchvision weights {weights}"
    model.eval()

    names = args.classes.split(",") if args.classes else categories or (VOC if num_classes == 21 else [f"class{i}" for i in range(num_classes)])
    if len(names) != num_classes:
        sys.exit(f"{len(names)} class names for {num_classes} classes")
    dtype = torch.float16 if args.dtype == "float16" else torch.float32
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked") and not k.startswith("aux_classifier.")}
    normalize = {"order": "Rgb", "pre_scale": 1.0 / 255.0, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "post_scale": 1.0}
    meta = {
        "name": args.model,
        "architecture": f"torchvision {args.model}",
        "builder": f"torchvision.models.segmentation.{args.model}(num_classes={num_classes}, aux_loss=False)",
        "source": source,
        "versions": json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__}),
        "num_classes": str(num_classes),
        "classes": json.dumps(names),
        "palette_rgb": json.dumps(voc_palette(num_classes)),
        "input": json.dumps({"layout": "NCHW", "channel_order": "RGB", "formula": "x[c] = (pixel[c]/255 - mean[c]) / std[c]",
                             "mean_rgb": IMAGENET_MEAN, "std_rgb": IMAGENET_STD}),
        "atrous_normalize": json.dumps(normalize),
        "made_by": "atrous tools/export_torchvision.py",
    }
    save_file(tensors, args.out, metadata=meta)
    print(f"wrote {args.out}: {len(tensors)} tensors, {sum(t.numel() for t in tensors.values())} values, {num_classes} classes ({source})")


if __name__ == "__main__":
    main()
