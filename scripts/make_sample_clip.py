"""Cut the shipped sample clip data/vtest_clip.mp4 from OpenCV's vtest.avi.

    python scripts/make_sample_clip.py [--src ../shared/data/vtest.avi] [--out data/vtest_clip.mp4]

24 frames starting at frame 100, every 2nd frame, downscaled to 384x288, MPEG-4 Part 2 ('mp4v'),
which the opencv-python-headless wheels both write and read. The result is decoded again and
its frame count and size checked, so a codec that silently writes nothing fails here.
"""
import argparse
import sys
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "vtest.avi")
    ap.add_argument("--out", type=Path, default=REPO / "data" / "vtest_clip.mp4")
    ap.add_argument("--start", type=int, default=100)
    ap.add_argument("--step", type=int, default=2)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, nargs=2, default=(384, 288), metavar=("W", "H"))
    args = ap.parse_args(argv)

    cap = cv2.VideoCapture(str(args.src))
    if not cap.isOpened():
        sys.exit(f"cannot open {args.src}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    # Read sequentially: frame seeking in AVI/MJPEG is not exact across OpenCV backends.
    frames, index = [], 0
    while len(frames) < args.frames:
        ok, frame = cap.read()
        if not ok:
            sys.exit(f"{args.src} ended at frame {index} before {args.frames} frames were taken")
        if index >= args.start and (index - args.start) % args.step == 0:
            frames.append(cv2.resize(frame, tuple(args.size), interpolation=cv2.INTER_AREA))
        index += 1
    cap.release()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(args.out), cv2.VideoWriter_fourcc(*"mp4v"), fps / args.step, tuple(args.size))
    if not writer.isOpened():
        sys.exit(f"cannot write {args.out} with the mp4v codec")
    for frame in frames:
        writer.write(frame)
    writer.release()

    cap = cv2.VideoCapture(str(args.out))
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame.shape)
    cap.release()
    if len(decoded) != args.frames or any(s != (args.size[1], args.size[0], 3) for s in decoded):
        sys.exit(f"{args.out}: decoded {len(decoded)} frames of shapes {set(decoded)}, expected "
                 f"{args.frames} of {args.size[0]}x{args.size[1]}")
    print(f"{args.out}: {len(decoded)} frames {args.size[0]}x{args.size[1]} at {fps / args.step:g} fps, "
          f"{args.out.stat().st_size} bytes (source frames {args.start}..{index - 1} step {args.step}, {fps:g} fps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
