"""How document states are stored: one codec per store, chosen by name.

==============  ===================================================  =====================================
name            stored per token (hidden size H)                     bytes per token (H = 384)
==============  ===================================================  =====================================
``float32``     the states as computed                               4H = 1536
``float16``     half precision                                       2H = 768
``int8``        ``round(x / s)`` in int8, ``s = max|x| / 127`` (f16)   H + 2 = 386
``pqM``         product quantisation: M sub-vectors of H/M dims,     M (e.g. ``pq64``: 64)
                each replaced by the id of its nearest of 256
                centroids (faiss k-means), after an optional OPQ
                rotation (``opqM``)
==============  ===================================================  =====================================

The cross-attention of the interaction layers reads the decoded states, so what matters is how close they stay
to the originals (``docs/results.md`` measures the nDCG@10 change of each form). Codecs encode with numpy (and faiss
for PQ, which is what trains it) and decode with torch, so that searching needs neither faiss nor a copy of the
stored arrays beyond the candidates' rows. Every codec's arrays have one row per token.
"""

from __future__ import annotations

import re
from typing import ClassVar

import numpy as np
import torch

PQ_CENTROIDS = 256  # 8-bit codes: one byte per sub-vector


class CodecError(ValueError):
    """An unknown compression name or settings that do not fit the states."""


class StateCodec:
    """Turns `(tokens, H)` float32 states into per-token arrays and back (one subclass per form)."""

    name: str
    needs_training: ClassVar[bool] = False

    def __init__(self, hidden_size: int):
        self.hidden_size = hidden_size

    def encode(self, states: np.ndarray) -> dict[str, np.ndarray]:
        """`(T, H)` float32 states -> arrays with T rows each."""
        raise NotImplementedError

    def decode(self, arrays: dict[str, torch.Tensor]) -> torch.Tensor:
        """Arrays with T rows each -> `(T, H)` float32 states."""
        raise NotImplementedError

    def bytes_per_token(self) -> float:
        """Stored bytes per token, everything the codec keeps per token included (int8's scale, PQ's codes)."""
        raise NotImplementedError

    def train(self, sample: np.ndarray, seed: int = 0) -> None:
        """Fit the codec to a `(T, H)` sample of states (codecs with ``needs_training`` only)."""
        raise CodecError(f"the {self.name} codec has nothing to train")

    def parameters(self) -> dict[str, np.ndarray]:
        """What a trained codec needs to decode (saved once per store)."""
        return {}

    def load_parameters(self, parameters: dict[str, np.ndarray]) -> None:
        """Restore what ``parameters`` returned."""
        raise CodecError(f"the {self.name} codec has no parameters to load")

    @property
    def trained(self) -> bool:
        return True


class Float32Codec(StateCodec):
    name = "float32"

    def encode(self, states):
        return {"states": np.ascontiguousarray(states, dtype=np.float32)}

    def decode(self, arrays):
        return arrays["states"].float()

    def bytes_per_token(self):
        return 4.0 * self.hidden_size


class Float16Codec(StateCodec):
    name = "float16"

    def encode(self, states):
        return {"states": states.astype(np.float16)}

    def decode(self, arrays):
        return arrays["states"].float()

    def bytes_per_token(self):
        return 2.0 * self.hidden_size


class Int8Codec(StateCodec):
    """Symmetric int8 per token: ``x ≈ q * s`` with ``q`` in [-127, 127] and one float16 scale ``s`` per token."""

    name = "int8"

    def encode(self, states):
        states = np.asarray(states, dtype=np.float32)
        # The scale is rounded to float16 before it divides, so that decoding multiplies by exactly what was used.
        scales = (np.abs(states).max(axis=1) / 127.0).astype(np.float16)
        divisor = np.maximum(scales.astype(np.float32), np.finfo(np.float16).tiny)[:, None]
        codes = np.clip(np.rint(states / divisor), -127, 127).astype(np.int8)
        return {"states": codes, "scales": scales}

    def decode(self, arrays):
        return arrays["states"].float() * arrays["scales"].float()[:, None]

    def bytes_per_token(self):
        return self.hidden_size + 2.0


class ProductQuantizationCodec(StateCodec):
    """Product quantisation (Jégou et al., 2011), optionally after an OPQ rotation (Ge et al., 2013), with faiss.

    The H dimensions are cut into ``subquantizers`` groups; each group of a token is stored as the id (one byte) of
    the nearest of 256 centroids learnt by k-means on a sample of the corpus's states. With ``rotation`` an
    orthogonal matrix learnt by OPQ first spreads the variance evenly over the groups. Decoding gathers the
    centroids and rotates back.
    """

    needs_training = True

    def __init__(self, hidden_size: int, subquantizers: int, rotation: bool = False):
        super().__init__(hidden_size)
        if subquantizers < 1 or hidden_size % subquantizers:
            raise CodecError(
                f"pq{subquantizers}: the number of sub-quantizers must divide the hidden size {hidden_size} "
                f"(e.g. {', '.join(str(m) for m in (16, 32, 48, 64, 96) if hidden_size % m == 0)})"
            )
        self.subquantizers, self.rotation = subquantizers, rotation
        self.name = f"{'opq' if rotation else 'pq'}{subquantizers}"
        self.centroids: np.ndarray | None = None  # (M, 256, H / M)
        self.rotation_matrix: np.ndarray | None = None  # (H, H), x_rotated = x @ R.T
        self._decoding: tuple[torch.Tensor, torch.Tensor | None] | None = None

    @property
    def trained(self) -> bool:
        return self.centroids is not None

    def train(self, sample, seed=0):
        import faiss

        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if len(sample) < PQ_CENTROIDS:
            raise CodecError(
                f"{self.name} needs at least {PQ_CENTROIDS} tokens to train its centroids, the sample has {len(sample)}"
            )
        if self.rotation:
            opq = faiss.OPQMatrix(self.hidden_size, self.subquantizers)
            opq.pq = faiss.ProductQuantizer(self.hidden_size, self.subquantizers, 8)
            opq.pq.cp.seed = seed
            opq.train(sample)
            self.rotation_matrix = faiss.vector_to_array(opq.A).reshape(self.hidden_size, self.hidden_size)
            sample = sample @ self.rotation_matrix.T
        quantizer = faiss.ProductQuantizer(self.hidden_size, self.subquantizers, 8)
        quantizer.cp.seed = seed
        quantizer.train(sample)
        self.load_parameters(self._parameters_of(quantizer))

    def _parameters_of(self, quantizer) -> dict[str, np.ndarray]:
        import faiss

        sub = self.hidden_size // self.subquantizers
        centroids = faiss.vector_to_array(quantizer.centroids).reshape(self.subquantizers, PQ_CENTROIDS, sub)
        parameters = {"centroids": centroids}
        if self.rotation_matrix is not None:
            parameters["rotation"] = self.rotation_matrix
        return parameters

    def parameters(self):
        if self.centroids is None:
            raise CodecError(f"{self.name} is not trained")
        parameters = {"centroids": self.centroids}
        if self.rotation_matrix is not None:
            parameters["rotation"] = self.rotation_matrix
        return parameters

    def load_parameters(self, parameters):
        centroids = np.ascontiguousarray(parameters["centroids"], dtype=np.float32)
        expected = (self.subquantizers, PQ_CENTROIDS, self.hidden_size // self.subquantizers)
        if centroids.shape != expected:
            raise CodecError(f"{self.name} centroids have shape {centroids.shape}, expected {expected}")
        if self.rotation != ("rotation" in parameters):
            raise CodecError(f"{self.name}: the stored parameters {'lack' if self.rotation else 'have'} a rotation")
        self.centroids = centroids
        self.rotation_matrix = parameters.get("rotation")
        rotation = None if self.rotation_matrix is None else torch.from_numpy(np.array(self.rotation_matrix))
        self._decoding = (torch.from_numpy(centroids.copy()), rotation)

    def _quantizer(self):
        import faiss

        quantizer = faiss.ProductQuantizer(self.hidden_size, self.subquantizers, 8)
        faiss.copy_array_to_vector(self.centroids.reshape(-1), quantizer.centroids)
        return quantizer

    def encode(self, states):
        if self.centroids is None:
            raise CodecError(f"{self.name} must be trained before it encodes")
        states = np.ascontiguousarray(states, dtype=np.float32)
        if self.rotation_matrix is not None:
            states = np.ascontiguousarray(states @ self.rotation_matrix.T)
        return {"codes": self._quantizer().compute_codes(states)}

    def decode(self, arrays):
        centroids, rotation = self._decoding
        codes = arrays["codes"].long()
        decoded = centroids[torch.arange(self.subquantizers), codes].reshape(len(codes), self.hidden_size)
        return decoded @ rotation if rotation is not None else decoded

    def bytes_per_token(self):
        return float(self.subquantizers)


COMPRESSIONS = ("float32", "float16", "int8", "pqM", "opqM")
_PQ_NAME = re.compile(r"(o?pq)(\d+)")


def make_codec(name: str, hidden_size: int) -> StateCodec:
    """The codec called ``name`` (``float32``, ``float16``, ``int8``, ``pqM`` or ``opqM``) for states of ``hidden_size``."""
    simple = {"float32": Float32Codec, "float16": Float16Codec, "int8": Int8Codec}
    if name in simple:
        return simple[name](hidden_size)
    match = _PQ_NAME.fullmatch(name)
    if match:
        return ProductQuantizationCodec(hidden_size, int(match.group(2)), rotation=match.group(1) == "opq")
    raise CodecError(
        f"unknown compression {name!r}: use float32, float16, int8, pqM or opqM (M sub-quantizers dividing the hidden "
        "size, e.g. pq64)"
    )
