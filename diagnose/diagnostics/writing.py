"""Writing measurements to TensorBoard cheaply: many scalars as one event, histograms from device summaries."""

import io
import struct
from pathlib import Path
from typing import Any

import torch
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary


def to_host(values: list[float | torch.Tensor]) -> list[float]:
    """0-d device tensors and floats as floats, with one host transfer for all the tensors."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    host = iter(torch.stack(tensors).tolist()) if tensors else iter(())
    return [next(host) if isinstance(v, torch.Tensor) else float(v) for v in values]


def write_scalars(writer: Any, values: dict[str, float], step: int) -> None:
    """All `values` at `step` as one event with many values (TensorBoard reads it as one point per tag): one event
    instead of one per tag, which costs ~50 us each."""
    if values:
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=v) for tag, v in values.items()])
        writer.file_writer.add_summary(summary, step)


def write_histograms(writer: Any, rows: dict[str, torch.Tensor], step: int) -> None:
    """`stats.histograms` rows, by tag, as one event (like the scalars); TensorBoard wants each bucket's right edge."""
    values = []
    for tag, row in rows.items():
        low, high, count, total, total_sq = row[:5].tolist()
        if count == 0:
            continue
        counts = row[5:]
        edges = torch.linspace(low, high, len(counts) + 1)[1:]
        histogram = HistogramProto(min=low, max=high, num=count, sum=total, sum_squares=total_sq,
                                   bucket_limit=edges.tolist(), bucket=counts.tolist())
        values.append(Summary.Value(tag=tag, histo=histogram))
    if values:
        writer.file_writer.add_summary(Summary(value=values), step)


def png_of(figure: Any) -> bytes:
    """A matplotlib figure (with an Agg canvas) as PNG bytes, the same as savefig writes."""
    png = io.BytesIO()
    figure.canvas.print_png(png)
    return png.getvalue()


def write_png(writer: Any, tag: str, png: bytes, step: int | None = None) -> None:
    """A PNG image as it is: SummaryWriter.add_figure/add_image would import pyplot, decode it to an array and
    encode it again."""
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk, first in every PNG
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(png[25], 4)  # by colour type: grey, RGB, grey+alpha, RGBA
    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def write_figure(writer: Any, tag: str, figure: Any, step: int | None = None, file: Path | None = None) -> None:
    """A matplotlib figure to TensorBoard, rendered once; the same PNG also to `file` where given."""
    png = png_of(figure)
    if file is not None:
        file.write_bytes(png)
    write_png(writer, tag, png, step)
