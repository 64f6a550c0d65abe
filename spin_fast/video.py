"""Reading and writing video through PyAV (FFmpeg's libraries, bundled in its wheels: no system ffmpeg).

PyAV is the optional extra `video` (`pip install 'spin_fast[video]'`); without it these raise
`VideoError` saying so.

    reader = VideoReader("clip.mp4")            # VideoError naming the file if it cannot be opened
    for index, frame in reader:                 # frame: (H, W, 3) uint8 RGB, or a str saying why
        ...                                     # that frame could not be decoded (report and go on)
    with VideoWriter(fh, width, height, fps) as w:   # fh: a binary file (an atomic write's temporary)
        w.write(rgb)                            # (H, W, 3) uint8; odd sides are padded by one pixel
"""
from __future__ import annotations

import os
from fractions import Fraction
from typing import IO, Iterator

import numpy as np

from spin_fast.errors import SpinFastError

INSTALL = "pip install 'spin_fast[video]'"
CODECS = ("libx264", "mpeg4")  # H.264 where the FFmpeg build has it, else MPEG-4 part 2 (always there)


class VideoError(SpinFastError):
    """A video that cannot be read or written (the message names the file), or PyAV missing."""


def _av():
    try:
        import av
    except ImportError:
        raise VideoError(f"PyAV is not installed; reading and writing video needs the extra: {INSTALL}") from None
    return av


class VideoReader:
    """The frames of a video file in decoding order, numbered from 0."""

    def __init__(self, path: str | os.PathLike):
        av = _av()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise VideoError(f"--video {self.path} does not exist")
        try:
            self.container = av.open(self.path)
        except av.error.FFmpegError as e:
            raise VideoError(f"--video {self.path}: not a readable video ({_reason(e)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"--video {self.path}: holds no video stream")
        self.stream = self.container.streams.video[0]
        self.width, self.height = self.stream.codec_context.width, self.stream.codec_context.height
        if not self.width or not self.height:
            self.container.close()
            raise VideoError(f"--video {self.path}: the video stream has no frame size (not a readable video)")
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = Fraction(rate) if rate else Fraction(25)
        self.num_frames = int(self.stream.frames) or None  # None: the container does not say

    def __iter__(self) -> Iterator[tuple[int, np.ndarray | str]]:
        av = _av()
        index = 0
        try:
            for packet in self.container.demux(self.stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as e:  # a damaged packet: its frame is lost, the rest go on
                    if packet.size:
                        yield index, f"frame {index} of {self.path}: cannot be decoded ({_reason(e)})"
                        index += 1
                    continue
                for frame in frames:
                    yield index, frame.to_ndarray(format="rgb24")
                    index += 1
        except av.error.FFmpegError as e:  # the container itself breaks off: what was read is kept
            yield index, f"{self.path}: reading stopped at frame {index} ({_reason(e)})"
        finally:
            self.container.close()


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e).splitlines()[0][:200]


class VideoWriter:
    """An MP4 of RGB frames written to the binary file `fh` (H.264 yuv420p, else MPEG-4)."""

    def __init__(self, fh: IO[bytes], width: int, height: int, fps: Fraction | float):
        av = _av()
        self.width, self.height = width + width % 2, height + height % 2  # yuv420p needs even sides
        self.out = av.open(fh, mode="w", format="mp4")
        codec = next(c for c in CODECS if _has_encoder(av, c))
        self.stream = self.out.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if (h, w) != (self.height, self.width):
            padded = np.zeros((self.height, self.width, 3), np.uint8)
            padded[:min(h, self.height), :min(w, self.width)] = rgb[:self.height, :self.width]
            rgb = padded
        frame = _av().VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self.stream.encode(frame):
            self.out.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():  # the encoder's delayed frames
            self.out.mux(packet)
        self.out.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.out.close()


def _has_encoder(av, name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # noqa: BLE001 - PyAV raises its own "unknown codec" classes
        return False


def count_frames(path: str | os.PathLike) -> int:
    """The number of frames a decoder gets from the file (each frame decoded)."""
    return sum(1 for _, frame in VideoReader(path) if not isinstance(frame, str))
