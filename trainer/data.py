"""The traces and video a run trains and validates on."""

from __future__ import annotations

import re
from dataclasses import dataclass

from streambed.abr_service.video import Video, default_video, load_video
from streambed.core.errors import ConfigError
from streambed.traces import Trace, load_traceset
from streambed.traces.synth import default_traces
from streambed.trainer.args import CommonArgs


@dataclass
class Data:
    train: list[Trace]
    val: list[Trace]
    video: Video


def _matching(traces: list[Trace], regex: str, flag: str, source: str) -> list[Trace]:
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"{flag} {regex!r} is not a regex: {exc}") from None
    kept = [t for t in traces if pattern.search(t.name)]
    if not kept:
        raise ConfigError(f"{flag} {regex!r} matches no trace in {source}")
    return kept


def load_data(args: CommonArgs) -> Data:
    traces = load_traceset(args.traces) if args.traces else default_traces()
    source = args.traces or "the embedded traces"
    if args.train_match:
        traces = _matching(traces, args.train_match, "--train-match", source)
    video = load_video(args.video) if args.video else default_video()
    if args.val_traces:
        if args.val_match:
            raise ConfigError(
                "--val-match chooses from the training traces; drop it or --val-traces"
            )
        val = load_traceset(args.val_traces)
        train = traces
    else:
        # A fixed split (independent of the seed, so runs are comparable), stratified by mean
        # throughput: evenly spaced through the sorted traces, so the held-out share spans the
        # training set's range instead of landing, by chance, on its hardest traces.
        candidates = traces
        if args.val_match:
            candidates = _matching(traces, args.val_match, "--val-match", source)
        order = sorted(candidates, key=lambda t: (t.mean_mbps, t.name))
        count = max(1, round(len(order) * args.val_fraction))
        stride = len(order) / count
        held = {id(order[int(stride * (k + 0.5))]) for k in range(count)}
        val = [t for t in traces if id(t) in held]
        train = [t for t in traces if id(t) not in held]
    if not train:
        raise ConfigError("no training traces left after the validation split")
    return Data(train, val, video)
