#!/usr/bin/env python3
"""Draws the demo's overview picture: for a few target val images, the input, the ground
truth and the colour predictions of several models side by side, labelled.

usage: demo_overview.py --images DIR --labels DIR --pred NAME=DIR [--pred ...] --out PNG
                        [--count 3] [--tile-width 256]

--images: Cityscapes-layout inputs (CITY/CITY_xxx_yyy_leftImg8bit.png, walked recursively;
the first --count sorted ones are shown). --labels: gtFine labelIds of the same split.
--pred: an `rccr-infer --out` folder (its color/ predictions) and the column's title.
Needs Pillow (installed into .deps/py by `make setup`, with cityscapesscripts).
"""
import argparse
import os
import sys

from PIL import Image, ImageDraw, ImageFont

# Cityscapes labelId -> trainId colour (the 19 evaluated classes); everything else black.
TRAIN_COLOURS = {
    7: (128, 64, 128), 8: (244, 35, 232), 11: (70, 70, 70), 12: (102, 102, 156),
    13: (190, 153, 153), 17: (153, 153, 153), 19: (250, 170, 30), 20: (220, 220, 0),
    21: (107, 142, 35), 22: (152, 251, 152), 23: (70, 130, 180), 24: (220, 20, 60),
    25: (255, 0, 0), 26: (0, 0, 142), 27: (0, 0, 70), 28: (0, 60, 100), 31: (0, 80, 100),
    32: (0, 0, 230), 33: (119, 11, 32),
}


def walk(root, suffix=""):
    out = []
    for d, _, files in os.walk(root):
        out += [os.path.join(d, f) for f in files if f.lower().endswith((".png", ".jpg", ".jpeg")) and suffix in f]
    return sorted(out)


def stem(path):
    """`CITY_000001_000019` of any Cityscapes-style file name."""
    name = os.path.basename(path)
    for tag in ("_leftImg8bit", "_gtFine", "_color", "_pred"):
        if tag in name:
            return name.split(tag)[0]
    return os.path.splitext(name)[0]


def find(root, key, suffix=""):
    hits = [p for p in walk(root, suffix) if stem(p) == key]
    if not hits:
        sys.exit(f"demo_overview: no file for {key} under {root}")
    return hits[0]


def colour_labels(path):
    ids = Image.open(path)
    lut = [0] * 768
    for label, rgb in TRAIN_COLOURS.items():
        lut[3 * label:3 * label + 3] = rgb
    ids = ids.convert("L")
    ids.putpalette(lut)
    return ids.convert("RGB")


def font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--pred", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--tile-width", type=int, default=256)
    args = ap.parse_args()
    preds = [p.split("=", 1) for p in args.pred]

    images = walk(args.images, "leftImg8bit")[: args.count] or walk(args.images)[: args.count]
    if not images:
        sys.exit(f"demo_overview: no images under {args.images}")
    titles = ["input", "ground truth"] + [name for name, _ in preds]
    rows = []
    for img in images:
        key = stem(img)
        tiles = [Image.open(img).convert("RGB"), colour_labels(find(args.labels, key, "labelIds"))]
        tiles += [Image.open(find(os.path.join(d, "color"), key)).convert("RGB") for _, d in preds]
        rows.append((key, tiles))

    w = args.tile_width
    first = rows[0][1][0]
    h = max(1, round(first.height * w / first.width))
    gap, head, side = 4, 26, 0
    f = font(16)
    canvas = Image.new("RGB", (len(titles) * (w + gap) + gap, head + len(rows) * (h + gap + 18)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        x = gap + c * (w + gap)
        tw = draw.textlength(title, font=f)
        draw.text((x + (w - tw) / 2, 4), title, fill="black", font=f)
    small = font(12)
    for r, (key, tiles) in enumerate(rows):
        y = head + r * (h + gap + 18)
        draw.text((gap + side, y), key, fill=(90, 90, 90), font=small)
        for c, tile in enumerate(tiles):
            resample = Image.BILINEAR if c == 0 else Image.NEAREST
            canvas.paste(tile.resize((w, h), resample), (gap + c * (w + gap), y + 16))
    # A 256-colour palette keeps the file small (flat label colours, a few photos).
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out} ({len(rows)} images x {len(titles)} columns)")


if __name__ == "__main__":
    main()
