"""Open Inference Protocol v2 (KServe / Triton REST) tensors, JSON and binary.

Binary tensor extension (Triton): a request with ``Inference-Header-Content-Length: N`` carries the
JSON header in its first N bytes and raw tensor bytes after it, in the order of the inputs that have
``"parameters": {"binary_data_size": k}``: little-endian, row-major; ``BYTES`` elements are each a
4-byte little-endian length followed by the bytes. A response is binary when the request asks
(``"binary_data": true`` on a requested output, or ``"binary_data_output": true`` in the request's
parameters, which tritonclient sends when no outputs are named); it then carries the same header.

    req = parse_infer_request(body, request.headers.get("inference-header-content-length"))
    body, header_length = encode_infer_response(model, version, req, {"output": ("INT64", array)})
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aicloud.serving.runtime import bad_input, parse_json

HEADER = "inference-header-content-length"

DTYPES: dict[str, Any] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: list[dict[str, Any]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)

    def wants_binary(self, name: str) -> bool:
        for out in self.outputs:
            if out.get("name") == name:
                params = out.get("parameters") or {}
                if "binary_data" in params:
                    return bool(params["binary_data"])
        return bool(self.parameters.get("binary_data_output", False))

    def requested(self, available: list[str]) -> list[str]:
        if not self.outputs:
            return list(available)
        names = [str(o.get("name")) for o in self.outputs]
        unknown = [n for n in names if n not in available]
        if unknown:
            raise bad_input("outputs", f"unknown output(s) {unknown}; this model has {available}")
        return names


def _shape(raw: Any, where: str) -> list[int]:
    if not isinstance(raw, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        raise bad_input(f"{where}.shape", "expected a list of integers")
    if any(s < 0 for s in raw):
        raise bad_input(f"{where}.shape", f"dimensions must be >= 0, got {raw}")
    return [int(s) for s in raw]


def _decode_bytes_tensor(buf: memoryview, count: int, where: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(buf):
            raise bad_input(where, f"BYTES data ends early at element {i}")
        (n,) = struct.unpack_from("<I", buf, offset)
        offset += 4
        if offset + n > len(buf):
            raise bad_input(where, f"BYTES element {i} claims {n} bytes, past the end of its data")
        out[i] = bytes(buf[offset : offset + n])
        offset += n
    if offset != len(buf):
        raise bad_input(where, f"BYTES data has {len(buf) - offset} bytes left over after {count} elements")
    return out


def encode_bytes_tensor(values: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for v in values.reshape(-1):
        data = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse a JSON or binary-extension inference request; raises a 400 naming the bad field."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise bad_input("Inference-Header-Content-Length", f"not an integer: {header_length!r}") from None
        if n < 0 or n > len(body):
            raise bad_input(
                "Inference-Header-Content-Length", f"{n} is larger than the request body ({len(body)} bytes)"
            )
        header, binary = body[:n], memoryview(body)[n:]
    else:
        header, binary = body, memoryview(b"")
    doc = parse_json(header)
    # true/false fill BOOL tensors only; a cheap scan of the bytes spares the walk of every request
    may_hold_bools = b"true" in header or b"false" in header
    if not isinstance(doc, dict):
        raise bad_input("body", "expected a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad_input("inputs", "expected a non-empty list of tensors")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for i, tensor in enumerate(raw_inputs):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict):
            raise bad_input(where, "expected a tensor object {name, shape, datatype, data}")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise bad_input(f"{where}.name", "expected a string")
        datatype = tensor.get("datatype")
        if datatype not in DTYPES:
            raise bad_input(f"{where}.datatype", f"expected one of {sorted(DTYPES)}, got {datatype!r}")
        shape = _shape(tensor.get("shape"), where)
        count = int(np.prod(shape)) if shape else 1
        dtype = DTYPES[datatype]
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise bad_input(
                    f"{where}.parameters.binary_data_size",
                    f"{size!r} bytes do not fit the {len(binary) - offset} binary bytes left in the body",
                )
            chunk = binary[offset : offset + size]
            offset += size
            if datatype == "BYTES":
                array = _decode_bytes_tensor(chunk, count, where)
            else:
                if size != count * dtype.itemsize:
                    raise bad_input(
                        where, f"shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, got {size}"
                    )
                array = np.frombuffer(chunk, dtype=dtype)
        else:
            data = tensor.get("data")
            if data is None:
                raise bad_input(f"{where}.data", "missing (or send it binary with binary_data_size)")
            if may_hold_bools and datatype != "BOOL" and _holds_bool(data):
                raise bad_input(f"{where}.data", f"expected {datatype} values, got a boolean (true/false)")
            try:
                array = np.array(data, dtype=dtype).reshape(-1)
            except (ValueError, TypeError, OverflowError) as exc:
                raise bad_input(f"{where}.data", f"not {datatype} values: {exc}") from None
            if array.size != count:
                raise bad_input(f"{where}.data", f"shape {shape} needs {count} values, got {array.size}")
        inputs[name] = array.reshape(shape)
        datatypes[name] = datatype
    if offset != len(binary):
        raise bad_input(
            "body", f"{len(binary) - offset} binary bytes follow the header but no input claims them"
        )
    outputs = doc.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise bad_input("outputs", "expected a list of {name, parameters} objects")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise bad_input("parameters", "expected an object")
    rid = doc.get("id")
    return InferRequest(
        id=str(rid) if rid is not None else None,
        inputs=inputs,
        datatypes=datatypes,
        outputs=outputs,
        parameters=parameters,
    )


def _holds_bool(data: Any) -> bool:
    """Whether a tensor's JSON ``data`` (nested lists, at most MAX_JSON_DEPTH deep) holds a boolean."""
    if isinstance(data, bool):
        return True
    return isinstance(data, list) and any(_holds_bool(v) for v in data)


def _json_data(datatype: str, array: np.ndarray) -> list[Any]:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat.tolist()]
    return list(flat.tolist())


def encode_infer_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: dict[str, tuple[str, np.ndarray]],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when it is binary (else None)."""
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in request.requested(list(outputs)):
        datatype, array = outputs[name]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if request.wants_binary(name):
            if datatype == "BYTES":
                raw = encode_bytes_tensor(array)
            else:
                raw = np.ascontiguousarray(array, dtype=DTYPES[datatype]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = _json_data(datatype, array)
        tensors.append(tensor)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": tensors}
    if request.id is not None:
        doc["id"] = request.id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def encode_infer_request(
    inputs: dict[str, tuple[str, np.ndarray]], binary: bool = True, binary_output: bool = True
) -> tuple[bytes, int | None]:
    """A client-side request (tests and benchmarks): the body and its header length (binary)."""
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, (datatype, array) in inputs.items():
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = (
                encode_bytes_tensor(array)
                if datatype == "BYTES"
                else array.astype(DTYPES[datatype]).tobytes()
            )
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = _json_data(datatype, array)
        tensors.append(tensor)
    header = json.dumps({"inputs": tensors, "parameters": {"binary_data_output": binary_output}}).encode()
    return (header + b"".join(blobs), len(header)) if blobs else (header, None)


def decode_infer_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """Output name → array, from a JSON or binary response (tests and benchmarks)."""
    n = len(body) if header_length is None else header_length
    doc = json.loads(body[:n])
    offset = n
    out: dict[str, np.ndarray] = {}
    for tensor in doc["outputs"]:
        dtype = DTYPES[tensor["datatype"]]
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        count = int(np.prod(tensor["shape"]))
        if size is not None:
            chunk = memoryview(body)[offset : offset + size]
            offset += size
            if tensor["datatype"] == "BYTES":
                arr = _decode_bytes_tensor(chunk, count, tensor["name"])
            else:
                arr = np.frombuffer(chunk, dtype=dtype)
        else:
            arr = np.array(tensor["data"], dtype=dtype)
        out[tensor["name"]] = arr.reshape(tensor["shape"])
    return out
