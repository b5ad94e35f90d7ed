"""Moonshine base-en speech recognition on onnxruntime, with our own greedy decoder.

The weights are the ``.ort`` files of moonshine-cpp (see weights.py). Those files store every
weight matrix as uint8 plus a Cast/Mul/Add dequantisation that onnxruntime runs again on *every*
call, because ORT-format models skip graph optimisation at load time: that costs ~50 ms per
decoder step (the 32768x416 embedding alone is re-dequantised each token). So at load time we
rebuild, in memory, an ordinary ONNX model from the ``.ort`` flatbuffer (same nodes, same
weights) and let onnxruntime constant-fold it: outputs agree within 2e-5 and a decoder step
drops to ~10 ms, at the price of ~2 s more loading and ~400 MB more resident memory (the
weights are then held as float32). Without the ``onnx`` package the ``.ort`` files run as they
are.

``transcribe`` is synchronous and keeps all per-call state local, so one recognizer can serve
several worker threads at once (onnxruntime's ``run`` is thread-safe).
"""

from __future__ import annotations

import ctypes
import logging
import math
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from unmute_trio.engines.weights import weight_path

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MIN_SAMPLES = SAMPLE_RATE // 10  # shorter input returns "" (the encoder needs >= 895 samples)
# Moonshine was trained on segments of up to ~30 s; longer input keeps only its last 30 s, the
# part a streaming caller is still waiting on.
MAX_SAMPLES = 30 * SAMPLE_RATE
START_TOKEN, END_TOKEN = 1, 2
# The decoder has no length limit of its own and loops on audio cut mid-phrase, so the number of
# generated tokens is capped by the audio's length (real speech stays well under 6.5 tokens/s).
TOKENS_PER_SECOND = 6.5
EXTRA_TOKENS = 6
SILENCE_PEAK = 10 ** (-60 / 20)  # below -60 dBFS peak there is nothing to transcribe
_BYTE_TOKEN = re.compile(rb"<0x([0-9A-Fa-f]{2})>")


def load_vocabulary(path: Path) -> list[bytes]:
    """Token id -> bytes, from moonshine's ``tokenizer.bin``.

    The file is the tokens in id order, each a length then that many bytes. A length below 128
    is one byte (0 = empty token); a first byte b >= 128 is followed by a second byte c and the
    length is c * 128 + (b - 128). Byte-fallback tokens are stored as the raw byte itself.
    """
    data = path.read_bytes()
    tokens: list[bytes] = []
    i = 0
    while i < len(data):
        n = data[i]
        i += 1
        if n >= 128:
            n = data[i] * 128 + n - 128
            i += 1
        if i + n > len(data):
            raise ValueError(f"{path} is truncated in token {len(tokens)}")
        tokens.append(data[i : i + n])
        i += n
    return tokens


def decode_tokens(vocabulary: list[bytes], ids: list[int]) -> str:
    """SentencePiece-style detokenisation: concatenate bytes, U+2581 is a space."""
    pieces = []
    for i in ids:
        if i in (0, START_TOKEN, END_TOKEN) or not 0 <= i < len(vocabulary):
            continue
        piece = vocabulary[i]
        # This vocabulary stores byte tokens raw, but the "<0x0A>" spelling is also accepted.
        m = _BYTE_TOKEN.fullmatch(piece)
        pieces.append(bytes([int(m.group(1), 16)]) if m else piece)
    # A multi-byte character cut by the token cap is dropped rather than shown as U+FFFD.
    text = b"".join(pieces).decode("utf-8", errors="ignore")
    return text.replace("\u2581", " ").strip()


def token_budget(n_samples: int) -> int:
    """The most tokens worth generating for ``n_samples`` of 16 kHz audio."""
    return math.ceil(n_samples / SAMPLE_RATE * TOKENS_PER_SECOND) + EXTRA_TOKENS


def tail_loop_start(tokens: list[int], max_n: int = 4, copies: int = 3) -> int | None:
    """Where a decoding loop starts, or None: if the list ends with the same n-gram (n <= max_n)
    ``copies`` times in a row, the length that keeps its first copy only. A single repeated
    token needs one more copy, so "very very very" survives while "a a a a" does not."""
    for n in range(1, max_n + 1):
        need = copies + 1 if n == 1 else copies
        if len(tokens) < n * need:
            continue
        tail = tokens[-n:]
        if all(tokens[-(k + 1) * n : len(tokens) - k * n] == tail for k in range(1, need)):
            return len(tokens) - (need - 1) * n
    return None


def _ort_format_to_onnx(data: bytes) -> bytes:
    """Rebuild an ONNX ModelProto from an ORT-format flatbuffer (nodes, weights, subgraphs),
    using the flatbuffer readers that ship inside the onnxruntime wheel."""
    import onnx
    from onnx import helper
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
        InferenceSession as FbSession,
    )
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.AttributeType import (
        AttributeType as At,
    )
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.TensorTypeAndShape import (
        TensorTypeAndShape,
    )

    def text(b: bytes | None) -> str:
        return b.decode() if b else ""

    def tensor(t) -> onnx.TensorProto:
        # The TensorDataType enum of the flatbuffer schema uses the TensorProto numbering.
        p = onnx.TensorProto(name=text(t.Name()), data_type=t.DataType())
        p.dims.extend(t.DimsAsNumpy().tolist() if t.DimsLength() else [])
        if t.StringDataLength():
            p.string_data.extend(t.StringData(i) for i in range(t.StringDataLength()))
        elif t.RawDataLength():
            p.raw_data = t.RawDataAsNumpy().tobytes()
        return p

    def attribute(a) -> onnx.AttributeProto:
        p = onnx.AttributeProto(name=text(a.Name()), type=a.Type())
        kind = a.Type()
        if kind == At.FLOAT:
            p.f = a.F()
        elif kind == At.INT:
            p.i = a.I()
        elif kind == At.STRING:
            p.s = a.S()
        elif kind == At.TENSOR:
            p.t.CopyFrom(tensor(a.T()))
        elif kind == At.GRAPH:
            p.g.CopyFrom(graph(a.G()))
        elif kind == At.FLOATS:
            p.floats.extend(a.FloatsAsNumpy().tolist())
        elif kind == At.INTS:
            p.ints.extend(a.IntsAsNumpy().tolist())
        elif kind == At.STRINGS:
            p.strings.extend(a.Strings(i) for i in range(a.StringsLength()))
        elif kind == At.TENSORS:
            p.tensors.extend(tensor(a.Tensors(i)) for i in range(a.TensorsLength()))
        elif kind == At.GRAPHS:
            p.graphs.extend(graph(a.Graphs(i)) for i in range(a.GraphsLength()))
        else:
            raise ValueError(f"attribute {p.name} has unsupported type {kind}")
        return p

    def value_info(v) -> onnx.ValueInfoProto:
        p = onnx.ValueInfoProto(name=text(v.Name()))
        info = v.Type()
        if info is None or info.ValueType() != 1:  # 1 = tensor; the models have no others
            return p
        tts = TensorTypeAndShape()
        tts.Init(info.Value().Bytes, info.Value().Pos)
        p.type.tensor_type.elem_type = tts.ElemType()
        if (shape := tts.Shape()) is not None:
            p.type.tensor_type.shape.SetInParent()
            for i in range(shape.DimLength()):
                dim, value = p.type.tensor_type.shape.dim.add(), shape.Dim(i).Value()
                if value is not None and value.DimType() == 1:  # DimensionValueType.VALUE
                    dim.dim_value = value.DimValue()
                elif value is not None and value.DimType() == 2:  # DimensionValueType.PARAM
                    dim.dim_param = text(value.DimParam())
        return p

    def graph(g) -> onnx.GraphProto:
        if g.SparseInitializersLength():
            raise ValueError("sparse initializers are not supported")
        args = {text(g.NodeArgs(i).Name()): g.NodeArgs(i) for i in range(g.NodeArgsLength())}
        weights = [tensor(g.Initializers(i)) for i in range(g.InitializersLength())]
        weight_names = {w.name for w in weights}
        nodes = []
        for i in range(g.NodesLength()):
            n = g.Nodes(i)
            node = helper.make_node(
                text(n.OpType()),
                [text(n.Inputs(j)) for j in range(n.InputsLength())],
                [text(n.Outputs(j)) for j in range(n.OutputsLength())],
                name=text(n.Name()),
                domain=text(n.Domain()),
            )
            node.attribute.extend(attribute(n.Attributes(j)) for j in range(n.AttributesLength()))
            nodes.append(node)
        inputs = [text(g.Inputs(i)) for i in range(g.InputsLength())]
        outputs = [text(g.Outputs(i)) for i in range(g.OutputsLength())]
        return helper.make_graph(
            nodes,
            "graph",
            [value_info(args[n]) for n in inputs if n not in weight_names],
            [value_info(args[n]) for n in outputs],
            weights,
        )

    model = FbSession.InferenceSession.GetRootAs(data, 0).Model()
    opsets = [model.OpsetImport(i) for i in range(model.OpsetImportLength())]
    proto = helper.make_model(
        graph(model.Graph()),
        ir_version=model.IrVersion(),
        opset_imports=[helper.make_opsetid(text(o.Domain()), o.Version()) for o in opsets],
    )
    return proto.SerializeToString()


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    model: bytes | str
    try:
        model = _ort_format_to_onnx(path.read_bytes())
    except ImportError as e:  # the onnx package is missing: still correct, ~5x slower decoding
        log.warning("running %s unoptimised (%s)", path.name, e)
        model = str(path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class MoonshineRecognizer:
    """One loaded model; ``transcribe`` may be called from several threads at once."""

    def __init__(self, threads: int = 1) -> None:
        self._vocabulary = load_vocabulary(weight_path("moonshine_tokenizer"))
        self._encoder = _session(weight_path("moonshine_encoder"), threads)
        self._decoder = _session(weight_path("moonshine_decoder"), threads)
        _release_freed_memory()
        inputs = {i.name: i.shape for i in self._decoder.get_inputs()}
        self._layers = sum(1 for n in inputs if n.endswith(".decoder.key"))
        past = inputs["past_key_values.0.decoder.key"]  # [batch, heads, sequence, head_dim]
        self._heads, self._head_dim = int(past[1]), int(past[3])
        self._outputs = [o.name for o in self._decoder.get_outputs()]
        # After the first step the cross-attention keys/values stay fixed; only the
        # self-attention cache has to come back out of the decoder.
        self._step_outputs = [n for n in self._outputs if ".encoder." not in n]

    def transcribe(self, audio: np.ndarray) -> str:
        """Text of float32 mono 16 kHz ``audio`` in [-1, 1]; "" for silence or < 0.1 s."""
        audio = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1)[-MAX_SAMPLES:])
        if audio.size < MIN_SAMPLES or float(np.max(np.abs(audio))) < SILENCE_PEAK:
            return ""
        return decode_tokens(self._vocabulary, self.generate(audio))

    def generate(self, audio: np.ndarray) -> list[int]:
        """Greedy decoding with a key/value cache: the token ids, without start/end tokens, of
        ``audio`` as ``transcribe`` passes it (contiguous float32, 0.1 to 30 s)."""
        hidden = self._encoder.run(["last_hidden_state"], {"input_values": audio[None]})[0]
        empty = np.zeros((1, self._heads, 0, self._head_dim), dtype=np.float32)
        feeds: dict[str, np.ndarray] = {"encoder_hidden_states": hidden}
        for layer in range(self._layers):
            for part in ("decoder.key", "decoder.value", "encoder.key", "encoder.value"):
                feeds[f"past_key_values.{layer}.{part}"] = empty
        feeds["use_cache_branch"] = np.array([False])
        outputs = self._outputs
        tokens: list[int] = []
        previous = START_TOKEN
        for _ in range(token_budget(audio.size)):
            feeds["input_ids"] = np.array([[previous]], dtype=np.int64)
            values = self._decoder.run(outputs, feeds)
            # Ids past the vocabulary file are padding rows of the output layer, never text.
            previous = int(np.argmax(values[0][0, -1, : len(self._vocabulary)]))
            if previous == END_TOKEN:
                break
            tokens.append(previous)
            if (keep := tail_loop_start(tokens)) is not None:
                del tokens[keep:]
                break
            for name, value in zip(outputs[1:], values[1:], strict=True):
                feeds[name.replace("present.", "past_key_values.", 1)] = value
            feeds["use_cache_branch"] = np.array([True])
            outputs = self._step_outputs
        return tokens


def _release_freed_memory() -> None:
    """Give back to the OS the ~500 MB that model conversion and constant folding freed (glibc
    keeps freed heap otherwise, and a worker process would carry it for its lifetime)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
