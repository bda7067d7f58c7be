"""Convert decoded frames to s16 mono 16 kHz the way ``sox in -r 16000 -c 1 -b 16 out`` does.

Why imitate sox: recognition on poor audio flips words on one-LSB differences, and the
project's proof that decoding is right is "Vosk gives the same transcript as on sox's
conversion". FFmpeg's default swresample filter (32 taps, cutoff at Nyquist) differs from
sox's by ~-39 dB, enough to change words. Sox's ``rate`` (default quality) is a linear-phase
Kaiser-windowed sinc with its passband edge at 95.68 % of the lower Nyquist: for 8 -> 16 kHz,
389 taps at 16 kHz, β = 13.04. swresample builds the same kind of filter per phase, so
matching length, cutoff and β (and computing in double precision) brings it to within one
LSB of sox (±1 on ~0.1 % of samples, sox run with -D), measured on espeak speech; see
docs/BENCHMARKS.md (Transcription). Two more differences are removed here: swresample
mirrors the signal beyond its ends where sox assumes silence (we add silence at both ends
and drop its output), and sox dithers (random on each run; ``sox -D`` or ``-R`` makes it
repeatable). Other rates use the same passband rule; only 8 kHz and 16 kHz were verified.
"""

from __future__ import annotations

import math

import av

from transcription.model import PCM_RATE

SOX_PASSBAND = 0.9568138  # sox: Fc = 0.4784069 at twice the input rate, i.e. this of Nyquist
# swresample's filter_length is ceil(filter_size / (PCM_RATE * cutoff / in_rate)): 185 gives
# 194 input taps, sox's 389 taps at the doubled rate; β nudged from 13.04 because sox's window
# spans 194.5 input samples, a length swresample cannot have (12.974 fits best, measured).
SWR_FILTER_SIZE = 185
SWR_KAISER_BETA = 12.974
LEAD_IN = 256  # input samples of silence, more than half the filter


class SoxLikeResampler:
    """Resamples frames of one format, layout and rate; build a new one when they change."""

    def __init__(self, first: av.AudioFrame) -> None:
        self.signature = _signature(first)
        self.rate = rate = first.sample_rate
        self._converts_rate = rate != PCM_RATE
        options: dict[str, str] | None = None
        if self._converts_rate:
            cutoff = SOX_PASSBAND * min(rate, PCM_RATE) / PCM_RATE
            options = {
                "filter_size": str(SWR_FILTER_SIZE),
                "cutoff": f"{cutoff:.7f}",
                "kaiser_beta": str(SWR_KAISER_BETA),
                "internal_sample_fmt": "dblp",
            }
        self._resampler = av.AudioResampler(
            format="s16", layout="mono", rate=PCM_RATE, options=options
        )
        self._in = 0  # input samples pushed, lead-in and lead-out not counted
        self._out = 0  # output bytes handed out
        self._drop = 0  # output bytes still to discard (the lead-in's output)
        # Silence around the signal, as sox assumes, where swresample would mirror it. Its
        # length is a whole number of samples at both rates, so its output can be dropped.
        step = rate // math.gcd(rate, PCM_RATE)
        self._pad = step * math.ceil(LEAD_IN / step)
        if self._converts_rate:
            self._drop = self._pad * PCM_RATE // rate * 2
            self._collect(self._resampler.resample(self._zeros(self._pad)))

    def accepts(self, frame: av.AudioFrame) -> bool:
        """Whether ``frame`` has the format, layout and rate this resampler was built for."""
        return _signature(frame) == self.signature

    def push(self, frame: av.AudioFrame) -> bytes:
        """PCM for ``frame`` (possibly empty: the filter holds back its last samples)."""
        frame.pts = None  # timestamps of hostile files must not make swresample pad or drop
        self._in += frame.samples
        return self._collect(self._resampler.resample(frame))

    def silence(self, samples: int) -> bytes:
        """PCM for ``samples`` input samples of silence (standing in for a lost packet)."""
        return self.push(self._zeros(samples))

    def flush(self) -> bytes:
        """The samples the filter still holds, at the end of the stream."""
        if not self._converts_rate:
            return self._collect(self._resampler.resample(None))
        out = self._collect(self._resampler.resample(self._zeros(self._pad)))
        out += self._collect(self._resampler.resample(None))
        # As sox: round(input samples x ratio) samples out; the lead-out's output goes.
        expected = round(self._in * PCM_RATE / self.rate) * 2
        return out[: max(0, expected - (self._out - len(out)))]

    def _zeros(self, samples: int) -> av.AudioFrame:
        return silent_frame(*self.signature, samples)

    def _collect(self, frames: list[av.AudioFrame]) -> bytes:
        out = b"".join(bytes(memoryview(f.planes[0])[: f.samples * 2]) for f in frames)
        if self._drop:
            dropped = min(self._drop, len(out))
            self._drop -= dropped
            out = out[dropped:]
        self._out += len(out)
        return out


def silent_frame(fmt: str, layout: str, rate: int, samples: int) -> av.AudioFrame:
    """``samples`` samples of digital silence in the given format, layout and rate."""
    frame = av.AudioFrame(format=fmt, layout=layout, samples=samples)
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = rate
    return frame


def _signature(frame: av.AudioFrame) -> tuple[str, str, int]:
    return (frame.format.name, frame.layout.name, frame.sample_rate)
