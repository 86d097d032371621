"""The manager/worker contract: how a frame sits in its slot, and the
record a worker sends back for it.

A slot holds a 64-byte header, then the frame's pixels.

Streams may have frames of different sizes. Every slot is sized for the
largest frame the pipeline takes (``max_frame_shape``), and each frame
carries its own size, stream, per-stream id, capture time and deadline in
the header in front of its pixels. One table with one slot size, rather than
a table per frame size, keeps one claim order over every stream (the oldest
frame first, which is what makes streams fair), one wake-up path per worker
and one reclaim for a dead worker; a 480p frame in a 1080p slot costs only
address space, never a copy.
"""
from __future__ import annotations

from typing import Any

import numpy as np

FRAME_HEADER = np.dtype(
    [
        ("stream", "<u4"),  # the stream's index in the pipeline
        ("height", "<u2"),
        ("width", "<u2"),
        ("stream_frame_id", "<u8"),  # the frame's position in its stream, from 0
        ("t_capture_ns", "<i8"),  # the source got the frame (perf_counter_ns clock)
        ("deadline_ns", "<i8"),  # a claim after this is late: skipped, not run; 0: none
        ("attempts", "<u4"),  # workers that failed on it (raised, or died holding it)
        ("_reserved", "V28"),
    ]
)
HEADER_BYTES = 64
assert FRAME_HEADER.itemsize == HEADER_BYTES

# Sizes a header can describe (uint16 height and width).
MAX_SIDE = 0xFFFF


def slot_bytes_for(max_frame_shape: tuple[int, int, int]) -> int:
    """Payload bytes of one slot: the header and the largest frame."""
    height, width = int(max_frame_shape[0]), int(max_frame_shape[1])
    return HEADER_BYTES + height * width * 3


def check_frame_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3 or shape[2] != 3 or not (1 <= shape[0] <= MAX_SIDE and 1 <= shape[1] <= MAX_SIDE):
        raise ValueError(f"frames must be HxWx3 (BGR) with 1 <= H, W <= {MAX_SIDE}, got shape {shape}")
    return int(shape[0]), int(shape[1]), 3


class SlotFrames:
    """Zero-copy numpy views of every slot's header and pixels."""

    def __init__(self, table: Any, max_frame_shape: tuple[int, int, int]) -> None:
        self.max_frame_shape = check_frame_shape(max_frame_shape)
        self.max_pixels = slot_bytes_for(self.max_frame_shape) - HEADER_BYTES
        if table.slot_bytes < HEADER_BYTES + self.max_pixels:
            raise ValueError(f"slots of {table.slot_bytes} bytes cannot hold {self.max_frame_shape} frames")
        buffers = [table.buffer(slot) for slot in range(table.n_slots)]
        self.headers = [np.frombuffer(b, FRAME_HEADER, count=1) for b in buffers]
        self._pixels = [np.frombuffer(b, np.uint8, count=self.max_pixels, offset=HEADER_BYTES)
                        for b in buffers]

    def image(self, slot: int, height: int, width: int) -> np.ndarray:
        """The ``(height, width, 3)`` view of ``slot``'s pixels."""
        return self._pixels[slot][: height * width * 3].reshape(height, width, 3)

    def frame(self, slot: int) -> tuple[Any, np.ndarray]:
        """The header (a one-element structured array) and the image it describes."""
        header = self.headers[slot]
        return header, self.image(slot, int(header["height"][0]), int(header["width"][0]))

    def release(self) -> None:
        """Drop the views, so that the segment can be unmapped."""
        self.headers = []
        self._pixels = []


# The result record: one per frame, through the ResultRing.
RESULT_OK = 0
RESULT_LATE = 1  # claimed after its deadline: skipped, not run
RESULT_FAILED = 2  # raised in every worker that tried it (max_attempts): given up


def result_dtype(max_detections: int) -> np.dtype[Any]:
    """The fixed-size record a worker sends for each frame."""
    return np.dtype(
        [
            ("frame_id", "<u8"),  # the slot's frame id: unique over the pipeline's life
            ("worker", "<u4"),
            ("status", "<u4"),  # RESULT_OK, RESULT_LATE or RESULT_FAILED
            ("n_detections", "<u4"),
            ("stream", "<u4"),  # from the frame's header
            ("batch_size", "<u4"),  # frames in the inference call that did it
            ("_pad", "<u4"),
            ("stream_frame_id", "<u8"),
            ("t_capture_ns", "<i8"),
            ("t_publish_ns", "<i8"),  # the frame was published into its slot (ingest)
            ("t_claim_ns", "<i8"),  # this worker claimed it
            ("t_infer_start_ns", "<i8"),  # preprocessing starts (of the whole batch)
            ("t_infer_end_ns", "<i8"),  # postprocessing done (of the whole batch)
            ("detections", "<f4", (max_detections, 6)),  # x1 y1 x2 y2 score class
        ]
    )
