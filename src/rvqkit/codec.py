"""The user-facing codec: load weights, encode audio to codes, decode codes to audio, and the
step-by-step path (embeddings → layer-by-layer quantization → dequantization → synthesis)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from . import audio as audio_io
from .config import CodecConfig
from .encoded import Encoded, check_fields
from .engine import Engine
from .errors import AudioError, BandwidthError, CodesError, RvqkitError, WeightsError
from .framing import segment_bounds, segment_count
from .model import EncodecModel
from .precision import Precision, check_precision, model_call
from .quant.rvq import LayerStep
from .weights import build_model, load_weights

ArrayLike = np.ndarray | torch.Tensor
AudioInput = ArrayLike | Sequence[ArrayLike]
DEFAULT_BANDWIDTH = 6.0
#: On a GPU: items in flight in :meth:`Codec.encode` / :meth:`Codec.decode`, and rows of every regular
#: engine step (fixed, so that every step has one shape: see :mod:`rvqkit.engine`).
GPU_SLOTS = 16
#: On a GPU: seconds per regular 24 kHz feed (large blocks: each feed is a few kernel launches per layer).
GPU_STEP_SECONDS = 4


class Codec:
    """An EnCodec model ready for inference, with weight norm folded and ``torch.inference_mode``.

    Args:
        model: the network.
        device: where it runs (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...).
        weights_sha256: sha256 of the weights file, stored with the codes it makes.
    """

    def __init__(
        self,
        model: EncodecModel,
        device: str | torch.device = "cpu",
        weights_sha256: str | None = None,
        precision: Precision = "fp32",
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.weights_sha256 = weights_sha256
        #: float precision of every model call: "fp32" (exact, TF32 off), "tf32" or "bf16"; see
        #: :mod:`rvqkit.precision`. Set around each call; the process-wide setting is never changed.
        self.precision: Precision = check_precision(precision)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        revision: str | None = None,
        precision: Precision = "fp32",
    ) -> Codec:
        """Load from a hub id (``facebook/encodec_24khz``), a Hugging Face folder or Meta ``.th`` file.

        ``precision`` is the float precision of the model calls (see :mod:`rvqkit.precision`). A Mimi, DAC
        or SNAC source raises :class:`WeightsError` naming its family and its loader."""
        from .families import family_of, not_encodec_message  # reads only names, config.json, headers

        family = family_of(name_or_path, revision)
        if family not in (None, "encodec"):
            raise WeightsError(not_encodec_message(name_or_path, family))
        w = load_weights(name_or_path, revision=revision)
        return cls(build_model(w.config, w.state_dict), device, w.sha256, precision)

    # -- facts -------------------------------------------------------------------------------------------
    @property
    def config(self) -> CodecConfig:
        return self.model.config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def sample_rate(self) -> int:
        """Model sample rate in Hz."""
        return self.config.sampling_rate

    @property
    def channels(self) -> int:
        return self.config.audio_channels

    @property
    def frame_rate(self) -> int:
        """Code frames per second."""
        return self.config.frame_rate

    @property
    def hop_length(self) -> int:
        """Samples per code frame."""
        return self.config.hop_length

    @property
    def bandwidths(self) -> tuple[float, ...]:
        """Available bandwidths in kbps."""
        return self.config.target_bandwidths

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def num_codebooks(self) -> int:
        return self.config.num_codebooks

    def num_parameters(self) -> int:
        """Trainable weights of encoder and decoder (codebook entries not counted, as the paper counts)."""
        return sum(p.numel() for p in self.model.parameters())

    # -- input preparation ---------------------------------------------------------------------------------
    def prepare(
        self, audio: AudioInput, sample_rate: int, lengths: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """User audio to a list of float32 ``[channels, samples]`` tensors at the model's rate and channels.

        ``audio`` is ``[samples]``, ``[channels, samples]``, ``[batch, channels, samples]`` (with optional
        per-item ``lengths`` in samples) or a list of 1-D/2-D items. Integer PCM is scaled to [-1, 1];
        float16 and bfloat16 tensors are converted to float32. ``lengths`` are integers from 1 to the
        item's samples; ``sample_rate`` is an integer in Hz. Anything else (an empty batch, a 0-d array,
        complex or bool samples, a float or out-of-range length) raises :class:`AudioError`.
        """
        _check_sample_rate(sample_rate)
        if isinstance(audio, (np.ndarray, torch.Tensor)):
            if audio.ndim == 3:
                items = [audio[i] for i in range(audio.shape[0])]
            elif audio.ndim in (1, 2):
                items = [audio]
            else:
                raise AudioError(
                    f"audio must be [samples], [channels, samples] or [batch, channels, samples]; got {tuple(audio.shape)}"
                )
        else:
            try:
                items = list(audio)
            except TypeError as e:
                raise AudioError(
                    f"audio must be an array, a tensor or a list of them, got {type(audio).__name__}"
                ) from e
        if not items:
            raise AudioError("empty batch: no audio items given")
        arrays = [_as_numpy(it) for it in items]
        if lengths is not None:
            arrays = [x[..., :n] for x, n in zip(arrays, _check_lengths(lengths, arrays), strict=True)]
        out = []
        for i, x in enumerate(arrays):
            x = audio_io.to_float(x)
            if x.ndim == 1:
                x = x[None]
            if x.ndim != 2:
                raise AudioError(f"audio item {i} must be [samples] or [channels, samples]; got {x.shape}")
            audio_io.check_layout(x, f"audio item {i}")  # the one channel rule: rvqkit.audio
            audio_io.check_finite(x, f"audio item {i}" if len(items) > 1 else "audio")
            x = audio_io.resample(
                audio_io.convert_channels(x, self.channels), int(sample_rate), self.sample_rate
            )
            out.append(torch.from_numpy(np.ascontiguousarray(x)))
        return out

    def n_q_for(self, bandwidth: float) -> int:
        """Codebooks used at ``bandwidth`` kbps, a number (raises :class:`BandwidthError` listing valid
        ones; strings and bools are refused)."""
        if isinstance(bandwidth, (bool, np.bool_)) or not isinstance(bandwidth, (int, float, np.number)):
            valid = ", ".join(f"{b:g}" for b in self.bandwidths)
            raise BandwidthError(f"bandwidth must be a number in kbps, one of: {valid}; got {bandwidth!r}")
        return self.config.n_q_for_bandwidth(bandwidth)

    # -- encode / decode -----------------------------------------------------------------------------------
    def engine(self, lstm_batch: int = 1) -> Engine:
        """The :class:`~rvqkit.engine.Engine` that :meth:`encode` and :meth:`decode` run on.

        CPU: ``lstm_batch`` 1 runs every item alone (one row per call, as the reference implementations);
        2 or more runs that many items in flight, in calls of at least two rows. GPU: :data:`GPU_SLOTS`
        items in flight, every regular step a call of that many rows (one shape)."""
        if lstm_batch < 1:
            raise RvqkitError(f"lstm_batch must be at least 1, got {lstm_batch}")
        if self.device.type == "cuda":
            return Engine(
                self.model,
                self.device,
                self.precision,
                "batched",
                GPU_SLOTS,
                GPU_STEP_SECONDS * self.sample_rate,
            )
        if lstm_batch > 1:
            return Engine(self.model, self.device, self.precision, "batched", lstm_batch)
        return Engine(self.model, self.device, self.precision)

    @model_call
    def encode(
        self,
        audio: AudioInput,
        sample_rate: int,
        bandwidth: float = DEFAULT_BANDWIDTH,
        lengths: Sequence[int] | None = None,
        lstm_batch: int = 1,
    ) -> Encoded:
        """Encode audio to codes ``[batch, n_q, frames]`` at ``bandwidth`` kbps.

        Items of any lengths run through the batching engine (:mod:`rvqkit.engine`): each item's codes
        are the same whatever it is batched with. On CPU each item runs alone by default, exactly as the
        reference implementations compute.

        ``lstm_batch`` (CPU, many items): 2 or more keeps that many items in flight, their steps sharing
        model calls (:meth:`engine`): faster on many items. An item's codes then still do not depend on
        the other items, but can differ from the default's at rare near-ties: the batched LSTM rounds
        about 1e-7 differently from a batch of one.
        """
        n_q = self.n_q_for(bandwidth)
        engine = self.engine(lstm_batch)
        items = self.prepare(audio, sample_rate, lengths)
        results = engine.encode(items, n_q)
        item_lengths = [x.shape[-1] for x in items]
        frame_lengths = [r.codes.shape[-1] for r in results]
        codes = torch.zeros(len(items), n_q, max(frame_lengths), dtype=torch.long)
        n_seg = [0 if r.scales is None else r.scales.shape[-1] for r in results]
        scales = torch.zeros(len(items), max(n_seg)) if self.config.normalize else None
        for i, r in enumerate(results):
            codes[i, :, : r.codes.shape[-1]] = r.codes
            if scales is not None and r.scales is not None:
                scales[i, : r.scales.shape[-1]] = r.scales
        return self.wrap_codes(codes, scales, item_lengths, frame_lengths)

    def wrap_codes(
        self,
        codes: torch.Tensor,
        scales: torch.Tensor | None,
        lengths: Sequence[int] | torch.Tensor,
        frame_lengths: Sequence[int] | torch.Tensor,
        encoded_here: bool = True,
    ) -> Encoded:
        """An :class:`Encoded` for this model's ``codes`` ``[batch, n_q, frames]`` (bandwidth from n_q),
        with per-item ``lengths`` (samples) and ``frame_lengths``. ``encoded_here``: the codes come from
        these weights (recorded as their sha256); False for codes from elsewhere (tokens, a corpus)."""
        return Encoded(
            codes=codes,
            scales=scales,
            lengths=torch.as_tensor(lengths, dtype=torch.long),
            frame_lengths=torch.as_tensor(frame_lengths, dtype=torch.long),
            sample_rate=self.sample_rate,
            channels=self.channels,
            bandwidth=self.config.bandwidth_for_n_q(codes.shape[1]),
            model=self.name,
            weights_sha256=self.weights_sha256 if encoded_here else None,
        )

    def check_encoded(self, encoded: Encoded) -> None:
        """Raise :class:`CodesError` if ``encoded`` was not made by a model like this one, or any of its
        fields is malformed (see :func:`rvqkit.encoded.check_fields`: checked arithmetically, before
        anything is allocated for the declared lengths)."""
        if (
            encoded.model != self.name
            or encoded.sample_rate != self.sample_rate
            or encoded.channels != self.channels
        ):
            raise CodesError(
                f"codes were made by {encoded.model} ({encoded.sample_rate} Hz, {encoded.channels} ch); "
                f"this model is {self.name} ({self.sample_rate} Hz, {self.channels} ch)"
            )
        check_fields(encoded, self.config)

    @model_call
    def decode(self, encoded: Encoded, n_q: int | None = None) -> torch.Tensor:
        """Audio ``[batch, channels, samples]`` (float32, model rate, on the codec's device) from codes,
        each item trimmed to its original length and zero-padded to the longest. ``n_q`` < encoded count
        decodes the first n_q codebooks only (coarse decoding)."""
        items = self.decode_items(encoded, n_q)
        if len(items) == 1:
            return items[0][None].to(self.device)
        out = torch.zeros(len(items), self.channels, max(a.shape[-1] for a in items))
        for i, a in enumerate(items):
            out[i, :, : a.shape[-1]] = a
        return out.to(self.device)

    @model_call
    def decode_items(self, encoded: Encoded, n_q: int | None = None) -> list[torch.Tensor]:
        """Audio of each item, ``[channels, samples_i]`` (float32, model rate, CPU), trimmed to its own
        length in ``encoded.lengths``: :meth:`decode` without padding every item to the longest. Items
        run through the engine as in :meth:`encode`."""
        self.check_encoded(encoded)
        if n_q is None:
            n_q = encoded.n_q
        if not 1 <= n_q <= encoded.n_q:
            raise BandwidthError(
                f"n_q must be between 1 and {encoded.n_q} (the codebooks the codes hold), got {n_q}"
            )
        lengths = [int(n) for n in encoded.lengths]
        frames = [int(f) for f in encoded.frame_lengths]
        codes = [encoded.codes[i, :n_q, : frames[i]] for i in range(len(lengths))]
        scales: list[torch.Tensor | None] = [None] * len(lengths)
        if encoded.scales is not None and self.config.normalize:
            scales = [encoded.scales[i, : segment_count(self.config, n)] for i, n in enumerate(lengths)]
        return self.engine().decode(codes, scales, lengths)

    # -- the step-by-step path ---------------------------------------------------------------------------
    @model_call
    def embed(self, audio: AudioInput, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Continuous encoder embeddings ``[batch, 128, frames]`` of equal-length items, and the per-segment
        scales ``[batch, segments]`` (48 kHz; segments' embeddings are concatenated along frames)."""
        items = self.prepare(audio, sample_rate)
        if len({x.shape[-1] for x in items}) != 1:
            raise AudioError("embed takes items of equal length; call it once per length")
        x = torch.stack(items).to(self.device)
        embs, scales = [], []
        for start, end in segment_bounds(self.config, x.shape[-1]):
            e, s = self.model.embed_segment(x[..., start:end])
            embs.append(e)
            scales.append(s)
        return torch.cat(embs, dim=-1), (torch.cat(scales, dim=1) if self.config.normalize else None)  # type: ignore[arg-type]  # normalize: all set

    @model_call
    def quantize(self, embeddings: torch.Tensor, n_q: int | None = None) -> list[LayerStep]:
        """Residual quantization layer by layer: each layer's indices ``[batch, frames]`` and the residual
        ``[batch, 128, frames]`` left after it. ``n_q`` defaults to all codebooks."""
        n_q = self.num_codebooks if n_q is None else n_q
        if not 1 <= n_q <= self.num_codebooks:
            raise BandwidthError(f"n_q must be between 1 and {self.num_codebooks}, got {n_q}")
        return self.model.quantizer.steps(embeddings.to(self.device), n_q)

    @model_call
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[batch, 128, frames]`` from codes ``[batch, n_q, frames]`` (sum of codebook entries)."""
        return self.model.quantizer.decode(codes.to(self.device))

    @model_call
    def synthesize(self, embeddings: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output ``[batch, channels, frames * 320]`` for embeddings of one segment (the whole
        signal at 24 kHz), multiplied by ``scale`` ``[batch, 1]`` when given."""
        return self.model.synthesize(embeddings.to(self.device), scale)

    # -- streaming ---------------------------------------------------------------------------------------
    def streaming(self, batch_size: int = 1, bandwidth: float = DEFAULT_BANDWIDTH):
        """Context manager giving a :class:`~rvqkit.stream.StreamingSession` (``.encoder``, ``.decoder``)
        for ``batch_size`` independent streams in lockstep; its state is dropped on exit."""
        from .stream import streaming

        return streaming(self, batch_size, bandwidth)

    def stream_encoder(
        self,
        bandwidth: float = DEFAULT_BANDWIDTH,
        batch_size: int = 1,
        sample_rate: int | None = None,
        step: int | None = None,
    ):
        """A :class:`~rvqkit.stream.StreamEncoder`: push audio chunks, get codes as frames become final.

        ``sample_rate`` (Hz) is the rate of the chunks pushed; other rates than the model's are resampled
        as a stream (default: the model's rate). ``step`` (samples): None feeds each chunk as pushed
        (lowest latency); a number feeds by the engine's rule, so the codes are exactly those of
        :meth:`encode` at ``step=self.model.step_samples()`` whatever the chunking."""
        from .stream import StreamEncoder

        return StreamEncoder(self, bandwidth, batch_size, sample_rate=sample_rate, step=step)

    def stream_decoder(self, batch_size: int = 1, length: int | None = None):
        """A :class:`~rvqkit.stream.StreamDecoder`: push codes, get audio as it becomes final."""
        from .stream import StreamDecoder

        return StreamDecoder(self, batch_size, length)

    def __repr__(self) -> str:
        return (
            f"Codec({self.name}, {self.sample_rate} Hz, {self.channels} ch, {self.frame_rate} frames/s, "
            f"bandwidths={list(self.bandwidths)} kbps, device={self.device})"
        )


# -- input validation ------------------------------------------------------------------------------------
def _check_sample_rate(sample_rate: object) -> None:
    if (
        isinstance(sample_rate, (bool, np.bool_))
        or not isinstance(sample_rate, (int, np.integer))
        or sample_rate <= 0
    ):
        raise AudioError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")


def _check_lengths(lengths: object, items: Sequence[np.ndarray]) -> list[int]:
    """Per-item ``lengths`` as ints, each from 1 to its item's samples (else :class:`AudioError`)."""
    if isinstance(lengths, (np.ndarray, torch.Tensor)):
        if lengths.dtype in (torch.bool, np.bool_) or not (
            (
                isinstance(lengths, torch.Tensor)
                and not lengths.is_floating_point()
                and not lengths.is_complex()
            )
            or (isinstance(lengths, np.ndarray) and lengths.dtype.kind in "iu")
        ):
            raise AudioError(f"lengths must be integers (samples), got dtype {lengths.dtype}")
        values = lengths.reshape(-1).tolist()
    else:
        try:
            values = list(lengths)  # type: ignore[call-overload]  # TypeError caught below
        except TypeError as e:
            raise AudioError(f"lengths must be a sequence of integers, got {type(lengths).__name__}") from e
    if len(values) != len(items):
        raise AudioError(f"{len(values)} lengths given for {len(items)} items")
    out = []
    for i, (n, item) in enumerate(zip(values, items, strict=True)):
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
            raise AudioError(f"lengths[{i}] must be an integer number of samples, got {n!r}")
        have = int(item.shape[-1])
        if not 1 <= n <= have:
            raise AudioError(f"lengths[{i}] = {n} is outside [1, {have}] (the item's samples)")
        out.append(int(n))
    return out


def _as_numpy(item: object) -> np.ndarray:
    """An audio item as a numpy array: tensors leave the graph and the device, float16/bfloat16 become
    float32 (numpy has no bfloat16); 0-d, complex and bool samples raise :class:`AudioError`."""
    if isinstance(item, torch.Tensor):
        t = item.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        if t.is_complex() or t.dtype == torch.bool:
            raise AudioError(f"unsupported audio dtype {t.dtype}; give float or int16/int32 PCM")
        x = t.numpy()
    else:
        try:
            x = np.asarray(item)
        except (TypeError, ValueError) as e:  # ragged nested lists ...
            raise AudioError(f"audio items must be arrays of samples ({e})") from e
    if x.ndim == 0:
        raise AudioError("audio items must be [samples] or [channels, samples], got a 0-d value")
    if x.dtype.kind not in "iuf":
        raise AudioError(f"unsupported audio dtype {x.dtype}; give float or int16/int32 PCM")
    return x
